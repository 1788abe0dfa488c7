"""IE predictions as the evaluation report shows them (evaluation/report.py): records as table rows,
grounds drawn on the media, mentions marked in the text."""
from evaluation.drawing import Mark
from evaluation.report import SampleView
from ie.scoring import annotation_records


def records_view(prediction):
    """What the evaluation report shows of an IE prediction: both sides' records as table rows, their
    grounds drawn on the media and their mentions marked in the text."""
    view = SampleView(prediction="", reference="", text=prediction["text"])
    for side in ("reference", "prediction"):
        records = annotation_records(prediction[side])
        view.records += [(side, kind, label, "; ".join(f"{m.text} [{ground_text(m.ground)}]" for m in mentions))
                         for kind, label, mentions in map(record_parts, records)]
        mentions = [(f"{label}: {m.text}", m) for _, label, ms in map(record_parts, records) for m in ms]
        view.marks += [Mark(side, m.ground.kind, m.ground.value, name) for name, m in mentions if m.ground]
        view.highlights += [(side, m.text) for _, m in mentions]
    count = len([r for r in view.records if r[0] == "prediction"])
    view.prediction = f"{count} record(s)" + (f", {prediction['malformed']} malformed" if prediction["malformed"]
                                              else "")
    view.reference = f"{len(view.records) - count} record(s)"
    return view


def record_parts(record):
    """(kind, label, mentions) of a record, as the report's table lists it."""
    kind = type(record).__name__.lower()
    if kind == "entity":
        return kind, record.type, [record.mention]
    if kind == "relation":
        return kind, record.label, [record.head, record.tail]
    return kind, record.type, [record.trigger] + [a.mention for a in record.arguments]


def ground_text(ground):
    if ground is None:
        return "text only"
    if ground.kind == "polygons":
        return f"mask of {len(ground.value)} polygon(s)"
    unit = " s" if ground.kind == "span" else ""
    return f"{ground.kind} " + ", ".join(f"{v:.1f}" for v in ground.value) + unit
