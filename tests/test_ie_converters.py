"""IE dataset converters: small samples written in each public format, the exact rows they give, the
missing-image policy both ways, and malformed input located by file, line and column."""
import base64
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from ie.records import Argument, Entity, Event, Mention, Relation, Schema, parse_records, parse_schema
from preprocess import gmner_to_tsv, m2e2_to_tsv, mnre_to_tsv, muie_tuples_to_tsv, twitter_mner_to_tsv
from preprocess.muie_tuples_to_tsv import TupleError, parse_tuple_string

TWITTER_SCHEMA = {"entity": ["person", "location", "organization", "miscellaneous"]}


def annotation(dataset, **content):
    return json.dumps({**content, "dataset": dataset}, ensure_ascii=False, separators=(",", ":"))


def summary_of(capsys):
    """The converter's summary line (the next line names the schema file)."""
    return capsys.readouterr().out.splitlines()[0]


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def make_images(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 6), (200, 30, 30)).save(folder / name, format="JPEG")
    return folder


def read_rows(path):
    with open(path, encoding="utf-8") as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle]
    for row in rows:  # every annotation cell reads back through the record model (the contract)
        assert len(row) == 6
        cell = json.loads(row[5])
        parse_schema(cell["schema"])
        for subtask, key in (("ner", "entities"), ("re", "relations"), ("ee", "events")):
            if key in cell:
                parse_records(cell, subtask)
    return rows


def error_of(main, argv):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    return str(stopped.value.code)


# ---- Twitter-2015/2017 ----------------------------------------------------------------------------

TWITTER = (
    "IMGID:1001\nKevin\tB-PER\nDurant\tI-PER\njoins\tO\nthe\tO\nWarriors\tB-ORG\nin\tO\nOakland\tB-LOC\n"
    "\n"
    "IMGID:1002\nJ\tO\n.\tO\nCole\tI-PER\nat\tO\nthe\tO\nEmmy\tB-MISC\nAwards\tI-MISC\n!\tO\n"
    "\n"
)


@pytest.fixture
def twitter(tmp_path):
    conll = write(tmp_path / "twitter2015" / "train.txt", TWITTER)
    images = make_images(tmp_path / "media" / "twitter2015_images", "1001.jpg", "1002.jpg")
    return conll, images, tmp_path


def twitter_argv(conll, images, out, *extra):
    return ["--conll", str(conll), "--images", str(images), "--out", str(out), *extra]


def test_twitter_rows_hold_entities_with_readable_types(twitter, capsys):
    conll, images, tmp = twitter
    out = tmp / "out" / "twitter_train.tsv"
    twitter_mner_to_tsv.main(twitter_argv(conll, images, out, "--media-dir", str(images.parent)))
    assert read_rows(out) == [
        ["1001", "twitter2015_images/1001.jpg", "", "", "Kevin Durant joins the Warriors in Oakland",
         annotation("twitter2015", entities=[{"type": "person", "mention": "Kevin Durant"},
                                             {"type": "organization", "mention": "Warriors"},
                                             {"type": "location", "mention": "Oakland"}], schema=TWITTER_SCHEMA)],
        # "I-PER" after "O" starts an entity; MISC is read as miscellaneous like OTHER
        ["1002", "twitter2015_images/1002.jpg", "", "", "J . Cole at the Emmy Awards !",
         annotation("twitter2015", entities=[{"type": "person", "mention": "Cole"},
                                             {"type": "miscellaneous", "mention": "Emmy Awards"}],
                    schema=TWITTER_SCHEMA)]]
    assert capsys.readouterr().out.splitlines() == [f"wrote {out} (2 rows)", f"schema: {out.parent / 'schema.json'}"]
    assert json.loads((out.parent / "schema.json").read_text()) == TWITTER_SCHEMA


def test_twitter_media_can_be_embedded_as_base64(twitter):
    conll, images, tmp = twitter
    out = tmp / "embedded.tsv"
    twitter_mner_to_tsv.main(twitter_argv(conll, images, out, "--embed-media"))
    rows = read_rows(out)
    assert [base64.b64decode(row[1], validate=True) for row in rows] == [
        (images / "1001.jpg").read_bytes(), (images / "1002.jpg").read_bytes()]


def test_twitter_missing_image_stops_with_file_and_line_and_writes_nothing(twitter):
    conll, images, tmp = twitter
    (images / "1002.jpg").unlink()
    out = tmp / "out.tsv"
    message = error_of(twitter_mner_to_tsv.main, twitter_argv(conll, images, out))
    assert message.startswith(f"error: {conll}:10: column 1 (field): image file not found: {images / '1002.jpg'}")
    assert "--text-only-missing" in message
    assert not out.exists() and not [name for name in os.listdir(tmp) if name.startswith(".out.tsv")]


def test_twitter_missing_image_kept_text_only_is_reported_and_counted(twitter, capsys):
    conll, images, tmp = twitter
    (images / "1002.jpg").unlink()
    out = tmp / "out.tsv"
    twitter_mner_to_tsv.main(twitter_argv(conll, images, out, "--text-only-missing"))
    rows = read_rows(out)
    assert [row[:5] for row in rows] == [
        ["1001", "1001.jpg", "", "", "Kevin Durant joins the Warriors in Oakland"],
        ["1002", "", "", "", "J . Cole at the Emmy Awards !"]]
    assert json.loads(rows[1][5])["entities"] == [{"type": "person", "mention": "Cole"},
                                                 {"type": "miscellaneous", "mention": "Emmy Awards"}]
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == f"wrote {out} (2 rows); 1 rows without their missing image"
    assert f"{conll}:10: image file not found: {images / '1002.jpg'}" in captured.err


def test_a_missing_image_is_reported_once_on_the_command_line(twitter):
    conll, images, tmp = twitter
    (images / "1002.jpg").unlink()
    script = os.path.join(os.path.dirname(twitter_mner_to_tsv.__file__), "twitter_mner_to_tsv.py")
    run = subprocess.run([sys.executable, script, *twitter_argv(conll, images, tmp / "out.tsv", "--text-only-missing")],
                         capture_output=True, text=True, check=True)
    assert run.stderr.count(f"image file not found: {images / '1002.jpg'}") == 1


def test_twitter_bad_tag_and_stray_token_are_located(twitter):
    conll, images, tmp = twitter
    bad = write(tmp / "bad.txt", TWITTER.replace("Warriors\tB-ORG", "Warriors\tB-TEAM"))
    message = error_of(twitter_mner_to_tsv.main, twitter_argv(bad, images, tmp / "o.tsv"))
    assert message.startswith(f"error: {bad}:6: column 2 (field): unknown tag 'B-TEAM'")
    stray = write(tmp / "stray.txt", "Kevin\tB-PER\n\n" + TWITTER)
    message = error_of(twitter_mner_to_tsv.main, twitter_argv(stray, images, tmp / "o.tsv"))
    assert message.startswith(f"error: {stray}:1: column 1 (field): a sentence must start with an 'IMGID:<id>' line")
    untagged = write(tmp / "untagged.txt", TWITTER.replace("joins\tO", "joins"))
    message = error_of(twitter_mner_to_tsv.main, twitter_argv(untagged, images, tmp / "o.tsv"))
    assert message.startswith(f"error: {untagged}:4: column 2 (field): expected 'token<TAB>tag'")


def test_twitter_skip_bad_rows_drops_and_counts_the_bad_sentence(twitter, capsys):
    conll, images, tmp = twitter
    bad = write(tmp / "bad.txt", TWITTER.replace("Cole\tI-PER", "Cole\tI-PERSON"))
    out = tmp / "out.tsv"
    twitter_mner_to_tsv.main(twitter_argv(bad, images, out, "--skip-bad-rows", "1"))
    assert [row[0] for row in read_rows(out)] == ["1001"]
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == f"wrote {out} (1 rows); 1 bad rows skipped"
    assert f"{bad}:13: column 2 (field): unknown tag 'I-PERSON'" in captured.err


def test_twitter_whitespace_only_token_tagged_o_is_dropped_and_counted(twitter, capsys):
    conll, images, tmp = twitter
    spaced = write(tmp / "twitter2015" / "valid.txt", TWITTER.replace("joins\tO\n", "joins\tO\n\xa0\tO\n"))
    out = tmp / "out.tsv"
    twitter_mner_to_tsv.main(twitter_argv(spaced, images, out))
    assert [row[4] for row in read_rows(out)] == ["Kevin Durant joins the Warriors in Oakland",
                                                  "J . Cole at the Emmy Awards !"]
    assert summary_of(capsys) == f"wrote {out} (2 rows); 1 whitespace-only tokens dropped"
    in_entity = write(tmp / "twitter2015" / "bad.txt", TWITTER.replace("Durant\tI-PER\n", "Durant\tI-PER\n \tI-PER\n"))
    message = error_of(twitter_mner_to_tsv.main, twitter_argv(in_entity, images, out))
    assert message.startswith(f"error: {in_entity}:4: column 1 (field): a whitespace-only token cannot be part of an "
                              f"entity (I-PER)")


def test_twitter_read_errors_go_through_skip_bad_rows_with_file_and_line(twitter, capsys):
    conll, images, tmp = twitter
    broken = TWITTER.replace("joins\tO\n", "joins\n").replace("IMGID:1002\n", "IMGID:1002\nIMGID:1003\n")
    bad = write(tmp / "twitter2015" / "bad.txt", broken + "IMGID:1001\nagain\tO\n")
    out = tmp / "out.tsv"
    message = error_of(twitter_mner_to_tsv.main, twitter_argv(bad, images, out, "--skip-bad-rows", "1"))
    assert message.startswith(f"error: {bad}:11: column 1 (field): IMGID line inside a sentence")
    twitter_mner_to_tsv.main(twitter_argv(bad, images, out, "--skip-bad-rows", "2"))
    rows = read_rows(out)
    assert [(row[0], row[4]) for row in rows] == [("1001", "again")]  # the id of the dropped sentence is free
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == f"wrote {out} (1 rows); 2 bad rows skipped"
    assert f"{bad}:4: column 2 (field): expected 'token<TAB>tag'" in captured.err
    assert f"{bad}:11: column 1 (field): IMGID line inside a sentence" in captured.err


def test_twitter_repeated_image_id_gets_a_numbered_row_id_and_the_dataset_its_name(twitter, capsys):
    conll, images, tmp = twitter
    repeated = write(tmp / "twitter2017" / "test.txt", TWITTER + "IMGID:1001\nagain\tO\n")
    out = tmp / "out.tsv"
    twitter_mner_to_tsv.main(twitter_argv(repeated, images, out))
    rows = read_rows(out)
    assert [row[0] for row in rows] == ["1001", "1002", "1001#2"] and rows[2][1] == "1001.jpg"
    assert {json.loads(row[5])["dataset"] for row in rows} == {"twitter2017"}
    assert summary_of(capsys) == f"wrote {out} (3 rows); 1 repeated row ids given a '#N' suffix"
    twitter_mner_to_tsv.main(twitter_argv(repeated, images, out, "--dataset", "tw17"))
    assert {json.loads(row[5])["dataset"] for row in read_rows(out)} == {"tw17"}
    with pytest.raises(SystemExit):
        twitter_mner_to_tsv.main(twitter_argv(repeated, images, out, "--dataset", "tw/17"))
    assert "a dataset name is non-empty and holds no '/'" in capsys.readouterr().err


# ---- Twitter-GMNER -------------------------------------------------------------------------------

GMNER_TEXT = (
    "IMGID:2001\nBill\tB-PER\nWalton\tI-PER\non\tO\nShark\tB-OTHER\nTank\tI-OTHER\n\n"
    "IMGID:2002\nGolden\tB-ORG\nState\tI-ORG\nbeat\tO\nthe\tO\nCavs\tB-ORG\n"
)


def voc_xml(filename, width, height, objects):
    parts = [f"<annotation>\n\t<filename>{filename}</filename>\n\t<size>\n\t\t<width>{width}</width>\n"
             f"\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n"]
    for name, (x0, y0, x1, y1) in objects:
        parts.append(f"\t<object>\n\t\t<name>{name}</name>\n\t\t<bndbox>\n\t\t\t<xmin>{x0}</xmin>\n"
                     f"\t\t\t<ymin>{y0}</ymin>\n\t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>{y1}</ymax>\n"
                     f"\t\t</bndbox>\n\t</object>\n")
    return "".join(parts) + "</annotation>\n"


@pytest.fixture
def gmner(tmp_path):
    conll = write(tmp_path / "txt" / "test.txt", GMNER_TEXT)
    xml_dir = tmp_path / "xml"
    write(xml_dir / "2001.xml", voc_xml("2001.jpg", 600, 450, [("Bill Walton", (146, 87, 338, 361)),
                                                              ("Mascot", (10, 10, 40, 40))]))
    write(xml_dir / "2002.xml", voc_xml("2002.jpg", 300, 200, [("Golden State", (10, 10, 50, 60)),
                                                              ("Golden  State", (100, 10, 150, 60))]))
    images = make_images(tmp_path / "images", "2001.jpg", "2002.jpg")
    return conll, xml_dir, images, tmp_path


def gmner_argv(conll, xml_dir, images, out, *extra):
    return ["--conll", str(conll), "--xml-dir", str(xml_dir), "--images", str(images), "--out", str(out), *extra]


def test_gmner_entities_are_grounded_by_the_boxes_naming_them(gmner, capsys):
    conll, xml_dir, images, tmp = gmner
    out = tmp / "gmner_test.tsv"
    gmner_to_tsv.main(gmner_argv(conll, xml_dir, images, out))
    assert read_rows(out) == [
        ["2001", "2001.jpg", "", "", "Bill Walton on Shark Tank",
         annotation("twitter-gmner",
                    entities=[{"type": "person", "mention": "Bill Walton", "ground": {"box": [146, 87, 338, 361]}},
                              {"type": "miscellaneous", "mention": "Shark Tank"}], schema=TWITTER_SCHEMA)],
        ["2002", "2002.jpg", "", "", "Golden State beat the Cavs",
         annotation("twitter-gmner",
                    entities=[{"type": "organization", "mention": "Golden State", "ground": {"polygons": [
             [10, 10, 50, 10, 50, 60, 10, 60], [100, 10, 150, 10, 150, 60, 100, 60]]}},
             {"type": "organization", "mention": "Cavs"}], schema=TWITTER_SCHEMA)]]
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == (f"wrote {out} (2 rows); 1 boxes naming no entity (unused); "
                                    f"2 grounded mentions")
    assert f"{xml_dir / '2001.xml'}:" in captured.err and "box named 'Mascot' matches no entity" in captured.err


def test_gmner_several_boxes_can_be_enclosed_in_one(gmner):
    conll, xml_dir, images, tmp = gmner
    out = tmp / "enclosing.tsv"
    gmner_to_tsv.main(gmner_argv(conll, xml_dir, images, out, "--multi-box", "enclosing"))
    entities = json.loads(read_rows(out)[1][5])["entities"]
    assert entities[0] == {"type": "organization", "mention": "Golden State", "ground": {"box": [10, 10, 150, 60]}}


def test_gmner_missing_image_both_ways(gmner, capsys):
    conll, xml_dir, images, tmp = gmner
    (images / "2001.jpg").unlink()
    out = tmp / "out.tsv"
    message = error_of(gmner_to_tsv.main, gmner_argv(conll, xml_dir, images, out))
    assert message.startswith(f"error: {conll}:1: column 1 (field): image file not found: {images / '2001.jpg'}")
    assert not out.exists()
    gmner_to_tsv.main(gmner_argv(conll, xml_dir, images, out, "--text-only-missing"))
    rows = read_rows(out)
    assert rows[0] == ["2001", "", "", "", "Bill Walton on Shark Tank",  # the box went with the image
                       annotation("twitter-gmner", entities=[{"type": "person", "mention": "Bill Walton"},
                                                             {"type": "miscellaneous", "mention": "Shark Tank"}],
                                  schema=TWITTER_SCHEMA)]
    assert rows[1][1] == "2002.jpg" and "ground" in rows[1][5]
    assert summary_of(capsys) == (f"wrote {out} (2 rows); 1 boxes naming no entity (unused); 1 grounded mentions; "
                                  f"1 grounds left out with their missing media; 1 rows without their missing image")


def test_gmner_bad_xml_is_located_in_the_xml_file(gmner):
    conll, xml_dir, images, tmp = gmner
    text = voc_xml("2002.jpg", 300, 200, [("Golden State", (10, 10, 50, 60)), ("Cavs", ("abc", 10, 150, 60))])
    write(xml_dir / "2002.xml", text)
    offset = text.index("<xmin>abc")
    line = text.count("\n", 0, offset) + 1
    column = offset - text.rindex("\n", 0, offset)
    message = error_of(gmner_to_tsv.main, gmner_argv(conll, xml_dir, images, tmp / "o.tsv"))
    assert message.startswith(f"error: {xml_dir / '2002.xml'}:{line}: column {column} (character): "
                              f"object 'Cavs': <xmin> must be a number, got 'abc'")
    write(xml_dir / "2002.xml", "<annotation>\n  <object>\n    <name>Cavs</nam>\n</annotation>\n")
    message = error_of(gmner_to_tsv.main, gmner_argv(conll, xml_dir, images, tmp / "o.tsv"))
    assert message.startswith(f"error: {xml_dir / '2002.xml'}:3: column 17 (character): invalid XML: mismatched tag")
    write(xml_dir / "2002.xml", voc_xml("2002.jpg", 300, 200, [("Cavs", (10, 10, 350, 60))]))
    message = error_of(gmner_to_tsv.main, gmner_argv(conll, xml_dir, images, tmp / "o.tsv"))
    assert "object 'Cavs': box [10.0, 10.0, 350.0, 60.0] lies outside the 300x200 image" in message


# ---- MNRE ----------------------------------------------------------------------------------------

MNRE_TOKENS = "['Reyes', ',', 'Paddack', 'join', 'San', 'Diego', 'Padres']"


def mnre_line(h, hpos, t, tpos, relation, tokens=MNRE_TOKENS, image="twitter_1.jpg"):
    return (f"{{'token': {tokens}, 'h': {{'name': '{h}', 'pos': {hpos}}}, 't': {{'name': '{t}', 'pos': {tpos}}}, "
            f"'img_id': '{image}', 'relation': '{relation}'}}")


MNRE_LINES = [
    mnre_line("Reyes", [0, 1], "San Diego Padres", [4, 7], "/per/org/member_of"),
    mnre_line("Paddack", [2, 3], "San Diego Padres", [4, 7], "/per/org/member_of"),
    mnre_line("Reyes", [0, 1], "Paddack", [2, 3], "/per/per/peer"),
    mnre_line("Paddack", [2, 3], "Reyes", [0, 1], "None"),
    json.dumps({"token": ["Paris", ",", "France"], "h": {"name": "France", "pos": [2, 3]},
                "t": {"name": "Paris", "pos": [0, 1]}, "img_id": "twitter_2.jpg", "relation": "/loc/loc/contain"}),
    mnre_line("Reyes", [0, 1], "Paddack", [2, 3], "/per/per/peer"),
]


@pytest.fixture
def mnre(tmp_path):
    source = write(tmp_path / "mnre_txt" / "mnre_test.txt", "\n".join(MNRE_LINES) + "\n")
    images = make_images(tmp_path / "mnre_image" / "img_org" / "test", "twitter_1.jpg", "twitter_2.jpg")
    return source, images, tmp_path


def mnre_argv(source, images, out, *extra):
    return ["--mnre", str(source), "--images", str(images), "--out", str(out), *extra]


def test_mnre_lines_of_one_tweet_become_one_row_of_relations(mnre, capsys):
    source, images, tmp = mnre
    out = tmp / "mnre_test.tsv"
    mnre_to_tsv.main(mnre_argv(source, images, out))
    schema = {"relation": ["/loc/loc/contain", "/per/org/member_of", "/per/per/peer"]}
    assert read_rows(out) == [
        ["twitter_1", "twitter_1.jpg", "", "", "Reyes , Paddack join San Diego Padres",
         annotation("mnre", relations=[
             {"label": "/per/org/member_of", "head": {"mention": "Reyes"}, "tail": {"mention": "San Diego Padres"}},
             {"label": "/per/org/member_of", "head": {"mention": "Paddack"}, "tail": {"mention": "San Diego Padres"}},
             {"label": "/per/per/peer", "head": {"mention": "Reyes"}, "tail": {"mention": "Paddack"}}],
             schema=schema)],
        ["twitter_2", "twitter_2.jpg", "", "", "Paris , France",
         annotation("mnre", relations=[{"label": "/loc/loc/contain", "head": {"mention": "France"},
                                        "tail": {"mention": "Paris"}}], schema=schema)]]
    assert summary_of(capsys) == (f"wrote {out} (2 rows); 1 pairs without relation; "
                                               f"1 repeated relations kept once")


def test_mnre_missing_image_both_ways(mnre, capsys):
    source, images, tmp = mnre
    (images / "twitter_2.jpg").unlink()
    out = tmp / "out.tsv"
    message = error_of(mnre_to_tsv.main, mnre_argv(source, images, out))
    assert message.startswith(f"error: {source}:5: column 1 (character): image file not found: "
                              f"{images / 'twitter_2.jpg'}")
    mnre_to_tsv.main(mnre_argv(source, images, out, "--text-only-missing"))
    rows = read_rows(out)
    assert [row[:5] for row in rows] == [["twitter_1", "twitter_1.jpg", "", "", "Reyes , Paddack join San Diego Padres"],
                                         ["twitter_2", "", "", "", "Paris , France"]]
    assert "1 rows without their missing image" in capsys.readouterr().out


def test_mnre_malformed_lines_are_located_by_character(mnre):
    source, images, tmp = mnre
    out_of_range = mnre_line("Reyes", [0, 9], "Paddack", [2, 3], "/per/per/peer")
    bad = write(tmp / "bad.txt", MNRE_LINES[0] + "\n" + out_of_range + "\n")
    message = error_of(mnre_to_tsv.main, mnre_argv(bad, images, tmp / "o.tsv"))
    assert message.startswith(f"error: {bad}:2: column {out_of_range.index(chr(39) + 'h' + chr(39)) + 1} (character): "
                              f"'h' pos must be [start, end) token indices within 0..7, got [0, 9]")
    renamed = mnre_line("Reyes", [0, 1], "Padres", [4, 7], "/per/org/member_of")
    bad = write(tmp / "bad.txt", renamed + "\n")
    message = error_of(mnre_to_tsv.main, mnre_argv(bad, images, tmp / "o.tsv"))
    assert message.startswith(f"error: {bad}:1: column {renamed.index(chr(39) + 't' + chr(39)) + 1} (character): "
                              f"'t' name 'Padres' differs from its tokens 'San Diego Padres'")
    bad = write(tmp / "bad.txt", MNRE_LINES[0] + "\n\n" + '{"token": ["a"], "h": \n')
    message = error_of(mnre_to_tsv.main, mnre_argv(bad, images, tmp / "o.tsv"))
    assert message.startswith(f"error: {bad}:3: column ") and "not a JSON object or Python dict literal" in message


def test_mnre_version_1_quirks_are_read_and_counted(mnre, capsys):
    """Version-1 lines: an integer img_id names <id>.jpg; a name differing from its tokens only in
    whitespace stands for the tokens; 'none' is no relation, as 'None' is in the second release."""
    source, images, tmp = mnre
    make_images(images, "657.jpg")
    hashtag = json.dumps({"token": ["#", "Padres", "win"], "h": {"name": "#Padres", "pos": [0, 2]},
                          "t": {"name": "win", "pos": [2, 3]}, "img_id": 657, "relation": "/misc/misc/part_of"})
    no_relation = mnre_line("Paddack", [2, 3], "Reyes", [0, 1], "none")
    v1 = write(tmp / "txt" / "ours_test.txt", "\n".join([MNRE_LINES[0], hashtag, no_relation]) + "\n")
    out = tmp / "out.tsv"
    mnre_to_tsv.main(mnre_argv(v1, images, out))
    rows = read_rows(out)
    assert rows[1][:5] == ["657", "657.jpg", "", "", "# Padres win"]
    assert json.loads(rows[1][5])["relations"] == [
        {"label": "/misc/misc/part_of", "head": {"mention": "# Padres"}, "tail": {"mention": "win"}}]
    assert json.loads(rows[0][5])["schema"] == {"relation": ["/misc/misc/part_of", "/per/org/member_of"]}
    assert summary_of(capsys) == (f"wrote {out} (2 rows); 1 integer img_id read as <id>.jpg; "
                                  f"1 names differing from their tokens only in whitespace; 1 pairs without relation")


def test_one_schema_per_dataset_written_beside_the_tsvs_and_used_by_every_split(mnre, capsys):
    """The training split's label set goes to schema.json; a split converted with --schema offers
    the same labels even where it lacks some; a split that finds another label set without
    --schema stops rather than replacing the dataset's."""
    source, images, tmp = mnre
    folder = tmp / "dataset"
    mnre_to_tsv.main(mnre_argv(source, images, folder / "train.tsv"))
    schema_file = folder / "schema.json"
    train_schema = {"relation": ["/loc/loc/contain", "/per/org/member_of", "/per/per/peer"]}
    assert json.loads(schema_file.read_text()) == train_schema
    test = write(tmp / "test.txt", MNRE_LINES[4] + "\n")
    message = error_of(mnre_to_tsv.main, mnre_argv(test, images, folder / "test.tsv"))
    assert message.startswith(f"error: {schema_file}:1: column 1 (character): holds another label set than the one "
                              f"found in this split: convert the training split first and the others with "
                              f"--schema {schema_file}")
    assert not (folder / "test.tsv").exists()
    mnre_to_tsv.main(mnre_argv(test, images, folder / "test.tsv", "--schema", str(schema_file)))
    assert [json.loads(row[5])["schema"] for row in read_rows(folder / "test.tsv")] == [train_schema]
    assert json.loads(schema_file.read_text()) == train_schema
    unseen = write(tmp / "unseen.txt", MNRE_LINES[4].replace("/loc/loc/contain", "/loc/loc/capital") + "\n")
    message = error_of(mnre_to_tsv.main, mnre_argv(unseen, images, folder / "unseen.tsv", "--schema", str(schema_file)))
    assert "labels not in the schema: relation '/loc/loc/capital'" in message
    schema_file.unlink()
    mnre_to_tsv.main(mnre_argv(source, images, folder / "train.tsv", "--labels-from", str(unseen)))
    assert json.loads(schema_file.read_text()) == {"relation": ["/loc/loc/capital", *train_schema["relation"]]}


# ---- M2E2 ----------------------------------------------------------------------------------------

M2E2_MULTIMEDIA_TEXT = [{
    "sentence_id": "VOA_1_3", "words": ["Police", "arrested", "the", "protesters", "in", "Cairo"],
    "sentence": "Police arrested the protesters in Cairo", "image": ["VOA_1_img1.jpg"],
    "golden-event-mentions": [{
        "event_type": "Justice:Arrest-Jail", "trigger": {"text": "arrested", "start": 1, "end": 2},
        "arguments": [{"role": "Agent", "text": "Police", "start": 0, "end": 1},
                      {"role": "Person", "text": "the protesters", "start": 2, "end": 4},
                      {"role": "Place", "text": "Cairo", "start": 5, "end": 6}]}]}]
M2E2_TEXT_ONLY = [
    {"sentence_id": "VOA_2_1", "words": ["Troops", "fired", "on", "the", "crowd"],
     "golden-event-mentions": [{"event_type": "Conflict:Attack", "trigger": {"text": "fired", "start": 1, "end": 2},
                                "arguments": [{"role": "Attacker", "text": "Troops", "start": 0, "end": 1},
                                              {"role": "Target", "text": "crowd", "start": 4, "end": 5}]}]},
    {"sentence_id": "VOA_2_2", "words": ["It", "rained"], "golden-event-mentions": []}]
M2E2_MULTIMEDIA_IMAGES = {"VOA_1_img1": {"event_type": "Justice:Arrest-Jail", "role": {
    "Agent": [["1", 10, 20, 110, 220]], "Person": [["2", 120, 20, 200, 220], ["3", 210, 30, 260, 200.5]]}}}
M2E2_IMAGE_ONLY = {"VOA_3_img2": {"event_type": "Movement:Transport", "role": {"Vehicle": [[5, 5, 95, 60]]}}}
M2E2_SCHEMA = {"event": ["Conflict:Attack", "Justice:Arrest-Jail", "Movement:Transport"],
               "role": ["Agent", "Attacker", "Person", "Place", "Target", "Vehicle"]}
ARREST_TEXT_ARGUMENTS = [{"role": "Agent", "mention": "Police"}, {"role": "Person", "mention": "the protesters"},
                         {"role": "Place", "mention": "Cairo"}]


@pytest.fixture
def m2e2(tmp_path):
    ann = tmp_path / "m2e2_annotations"
    files = {"text_mm": write(ann / "text_multimedia_event.json", json.dumps(M2E2_MULTIMEDIA_TEXT, indent=2)),
             "text_only": write(ann / "text_only_event.json", json.dumps(M2E2_TEXT_ONLY, indent=2)),
             "image_mm": write(ann / "image_multimedia_event.json", json.dumps(M2E2_MULTIMEDIA_IMAGES, indent=2)),
             "image_only": write(ann / "image_only_event.json", json.dumps(M2E2_IMAGE_ONLY, indent=2)),
             "coref": write(ann / "crossmedia_coref.txt", "VOA_1_3\tVOA_1_img1.jpg\tJustice:Arrest-Jail\n")}
    images = make_images(tmp_path / "m2e2_rawdata" / "image" / "image", "VOA_1_img1.jpg", "VOA_3_img2.jpg")
    return files, images, tmp_path


def m2e2_argv(files, images, out, *extra):
    return ["--text-events", str(files["text_mm"]), str(files["text_only"]),
            "--image-events", str(files["image_mm"]), str(files["image_only"]),
            "--coref", str(files["coref"]), "--images", str(images), "--out", str(out), *extra]


def test_m2e2_gives_multimedia_text_and_image_rows(m2e2, capsys):
    files, images, tmp = m2e2
    out = tmp / "m2e2.tsv"
    m2e2_to_tsv.main(m2e2_argv(files, images, out))
    image_arguments = [{"role": "Agent", "mention": "agent", "ground": {"box": [10, 20, 110, 220]}},
                       {"role": "Person", "mention": "person", "ground": {"box": [120, 20, 200, 220]}},
                       {"role": "Person", "mention": "person", "ground": {"box": [210, 30, 260, 200.5]}}]
    assert read_rows(out) == [
        ["VOA_1_3|VOA_1_img1.jpg", "VOA_1_img1.jpg", "", "", "Police arrested the protesters in Cairo",
         annotation("m2e2", events=[{"type": "Justice:Arrest-Jail", "trigger": {"mention": "arrested"},
                             "arguments": ARREST_TEXT_ARGUMENTS + image_arguments}], schema=M2E2_SCHEMA)],
        ["VOA_2_1", "", "", "", "Troops fired on the crowd",
         annotation("m2e2", events=[{"type": "Conflict:Attack", "trigger": {"mention": "fired"},
                             "arguments": [{"role": "Attacker", "mention": "Troops"},
                                           {"role": "Target", "mention": "crowd"}]}], schema=M2E2_SCHEMA)],
        ["VOA_2_2", "", "", "", "It rained", annotation("m2e2", events=[], schema=M2E2_SCHEMA)],
        ["VOA_3_img2.jpg", "VOA_3_img2.jpg", "", "", "",
         annotation("m2e2", events=[{"type": "Movement:Transport", "trigger": {"mention": "transport"},
                             "arguments": [{"role": "Vehicle", "mention": "vehicle",
                                            "ground": {"box": [5, 5, 95, 60]}}]}], schema=M2E2_SCHEMA)]]
    assert summary_of(capsys) == f"wrote {out} (4 rows); 4 grounded mentions"


def test_m2e2_unusable_coreferences_leave_sentence_and_image_on_their_own_rows(m2e2, capsys):
    """An image annotated with another type, or a sentence without a text event of the coreferred
    type (its image event would need a trigger the text lacks): no T+I row, nothing lost."""
    files, images, tmp = m2e2
    meeting = {"VOA_1_img1": {"event_type": "Contact:Meet", "role": {"Entity": [["1", 1, 2, 30, 40]]}}}
    for coref, image_events in (("VOA_1_3\tVOA_1_img1.jpg\tJustice:Arrest-Jail\n", meeting),
                                ("VOA_1_3\tVOA_1_img1.jpg\tContact:Meet\n", meeting)):
        write(files["coref"], coref)
        write(files["image_mm"], json.dumps(image_events))
        out = tmp / "m2e2.tsv"
        m2e2_to_tsv.main(m2e2_argv(files, images, out))
        rows = {row[0]: row for row in read_rows(out)}
        assert sorted(rows) == ["VOA_1_3", "VOA_1_img1.jpg", "VOA_2_1", "VOA_2_2", "VOA_3_img2.jpg"]
        assert json.loads(rows["VOA_1_3"][5])["events"] == [
            {"type": "Justice:Arrest-Jail", "trigger": {"mention": "arrested"}, "arguments": ARREST_TEXT_ARGUMENTS}]
        assert rows["VOA_1_img1.jpg"][4] == "" and json.loads(rows["VOA_1_img1.jpg"][5])["events"] == [
            {"type": "Contact:Meet", "trigger": {"mention": "meet"},
             "arguments": [{"role": "Entity", "mention": "entity", "ground": {"box": [1, 2, 30, 40]}}]}]
    first, second = capsys.readouterr().out.splitlines()[::2]
    assert "; 1 coreferred images annotated with another event type (sentence and image on their own rows)" in first
    assert "; 1 coreferences without a text event of their type (sentence and image on their own rows)" in second


def test_m2e2_missing_image_both_ways(m2e2, capsys):
    files, images, tmp = m2e2
    (images / "VOA_1_img1.jpg").unlink()
    (images / "VOA_3_img2.jpg").unlink()
    out = tmp / "out.tsv"
    message = error_of(m2e2_to_tsv.main, m2e2_argv(files, images, out))
    assert message.startswith(f"error: {files['coref']}:1: column 1 (field): image file not found: "
                              f"{images / 'VOA_1_img1.jpg'}")
    assert not out.exists()
    m2e2_to_tsv.main(m2e2_argv(files, images, out, "--text-only-missing"))
    rows = read_rows(out)
    # the sentence of the coreference stands on its own T row (one row, however many images it had);
    # the image rows have nothing left
    assert [row[0] for row in rows] == ["VOA_1_3", "VOA_2_1", "VOA_2_2"]
    assert rows[0][1] == "" and json.loads(rows[0][5])["events"][0]["arguments"] == ARREST_TEXT_ARGUMENTS
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == (
        f"wrote {out} (3 rows); 1 coreferences whose image file is missing (sentence and image on their own rows); "
        f"4 grounds left out with their missing media; 2 rows dropped: media missing and no text")
    assert captured.err.count("image file not found") == 2


def test_m2e2_missing_image_only_image_is_located_at_its_key(m2e2):
    files, images, tmp = m2e2
    (images / "VOA_3_img2.jpg").unlink()
    text = files["image_only"].read_text(encoding="utf-8")
    offset = text.index('"VOA_3_img2"')
    line, column = text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)
    message = error_of(m2e2_to_tsv.main, m2e2_argv(files, images, tmp / "o.tsv"))
    assert message.startswith(f"error: {files['image_only']}:{line}: column {column} (character): image file not found")


def test_m2e2_malformed_input_is_located(m2e2):
    files, images, tmp = m2e2
    write(files["image_only"], json.dumps({"VOA_3_img2": {"event_type": "Movement:Transport",
                                                          "role": {"Vehicle": [[95, 5, 5, 60]]}}}, indent=2))
    message = error_of(m2e2_to_tsv.main, m2e2_argv(files, images, tmp / "o.tsv"))
    assert message.startswith(f"error: {files['image_only']}:2: column 3 (character): image VOA_3_img2 role Vehicle: "
                              f"empty or negative box [95, 5, 5, 60]")
    write(files["image_only"], json.dumps(M2E2_IMAGE_ONLY))
    write(files["coref"], "VOA_1_3\tVOA_1_img1.jpg\n")
    message = error_of(m2e2_to_tsv.main, m2e2_argv(files, images, tmp / "o.tsv"))
    assert message.startswith(f"error: {files['coref']}:1: column 3 (field): expected sentence_id<TAB>image file<TAB>")
    write(files["text_only"], '[\n  {"sentence_id": "VOA_2_1",\n   "words": ["a" "b"]}\n]')
    message = error_of(m2e2_to_tsv.main, m2e2_argv(files, images, tmp / "o.tsv"))
    assert message.startswith(f"error: {files['text_only']}:3: column 18 (character): invalid JSON: Expecting ','")
    broken = [dict(M2E2_TEXT_ONLY[0], **{"golden-event-mentions": [
        {"event_type": "Conflict:Attack", "trigger": {"text": "fired", "start": 1, "end": 9}, "arguments": []}]})]
    write(files["text_only"], json.dumps(broken, indent=2))
    message = error_of(m2e2_to_tsv.main, m2e2_argv(files, images, tmp / "o.tsv"))
    assert message.startswith(f"error: {files['text_only']}:3: column 20 (character): VOA_2_1 event 0 trigger "
                              f"start/end must be word indices within 0..5, got 1, 9")


def test_m2e2_text_files_are_united_per_sentence(m2e2, capsys):
    """The published text files share sentence ids: one sentence, its events united, an event in
    both with the union of its arguments; differing words are an error located in the second file."""
    files, images, tmp = m2e2
    arrest_again = dict(M2E2_MULTIMEDIA_TEXT[0], **{"golden-event-mentions": [
        {"event_type": "Justice:Arrest-Jail", "trigger": {"text": "arrested", "start": 1, "end": 2},
         "arguments": [{"role": "Agent", "text": "Police", "start": 0, "end": 1},
                       {"role": "Place", "text": "in Cairo", "start": 4, "end": 6}]},
        {"event_type": "Movement:Transport", "trigger": {"text": "arrested", "start": 1, "end": 2},
         "arguments": [{"role": "Artifact", "text": "the protesters", "start": 2, "end": 4}]}]})
    write(files["text_only"], json.dumps(M2E2_TEXT_ONLY + [arrest_again], indent=2))
    out = tmp / "m2e2.tsv"
    m2e2_to_tsv.main(m2e2_argv(files, images, out, "--text-only-missing"))
    rows = read_rows(out)
    assert [row[0] for row in rows] == ["VOA_1_3|VOA_1_img1.jpg", "VOA_2_1", "VOA_2_2", "VOA_3_img2.jpg"]
    events = json.loads(rows[0][5])["events"]
    assert [(e["type"], e["trigger"]["mention"], [a["mention"] for a in e["arguments"] if "ground" not in a])
            for e in events] == [
        ("Justice:Arrest-Jail", "arrested", ["Police", "the protesters", "Cairo", "in Cairo"]),
        ("Movement:Transport", "arrested", ["the protesters"])]
    assert len([a for a in events[0]["arguments"] if "ground" in a]) == 3
    assert "; 1 sentence ids found again (events united)" in summary_of(capsys)
    reworded = dict(arrest_again, words=["Officers"] + arrest_again["words"][1:])
    write(files["text_only"], json.dumps(M2E2_TEXT_ONLY + [reworded], indent=2))
    text = files["text_only"].read_text(encoding="utf-8")
    offset = text.index('"VOA_1_3"')
    line, column = text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)
    message = error_of(m2e2_to_tsv.main, m2e2_argv(files, images, out))
    assert message.startswith(f"error: {files['text_only']}:{line}: column {column} (character): sentence_id VOA_1_3 "
                              f"appears twice with different words (first at {files['text_mm']}:3)")


def test_m2e2_row_ids_are_unique_across_text_and_image_rows(m2e2):
    """M2E2 names an image like a sentence (VOA_X_3.jpg beside sentence VOA_X_3): the image row is
    named by its file."""
    files, images, tmp = m2e2
    make_images(images, "VOA_2_1.jpg")
    write(files["image_only"], json.dumps({**M2E2_IMAGE_ONLY, "VOA_2_1": M2E2_IMAGE_ONLY["VOA_3_img2"]}))
    out = tmp / "m2e2.tsv"
    m2e2_to_tsv.main(m2e2_argv(files, images, out))
    ids = [row[0] for row in read_rows(out)]
    assert ids == ["VOA_1_3|VOA_1_img1.jpg", "VOA_2_1", "VOA_2_2", "VOA_3_img2.jpg", "VOA_2_1.jpg"]


# ---- MUIE/REAMO tuple strings --------------------------------------------------------------------

def test_tuple_strings_parse_to_records():
    records, malformed = parse_tuple_string("(Washington, D.C., location); (Barack  Obama, person)", "ner")
    assert records == [Entity("location", Mention("Washington, D.C.")), Entity("person", Mention("Barack Obama"))]
    assert malformed == 0
    assert parse_tuple_string("(Obama, born in, Hawaii)\n(Obama, president of, US)", "re")[0] == [
        Relation("born in", Mention("Obama"), Mention("Hawaii")),
        Relation("president of", Mention("Obama"), Mention("US"))]
    schema = Schema(relation=["born in"])
    assert parse_tuple_string("(Obama, born in, Honolulu, Hawaii)", "re", schema)[0] == [
        Relation("born in", Mention("Obama"), Mention("Honolulu, Hawaii"))]
    event = "(Type: Attack, Trigger: fired (twice), Attacker: troops, Target: crowd, Target: police, Instrument: None)"
    assert parse_tuple_string(event, "ee")[0] == [Event("Attack", Mention("fired (twice)"), (
        Argument("Attacker", Mention("troops")), Argument("Target", Mention("crowd")),
        Argument("Target", Mention("police"))))]
    for empty in ("", "  None ", "[]"):
        assert parse_tuple_string(empty, "ee") == ([], 0)


def test_malformed_tuples_raise_with_their_offset_or_are_counted():
    with pytest.raises(TupleError) as raised:
        parse_tuple_string("(Obama, person) x (Hawaii, location)", "ner")
    assert raised.value.offset == 16
    assert parse_tuple_string("(Obama, person) x (Hawaii, location)", "ner", strict=False) == (
        [Entity("person", Mention("Obama")), Entity("location", Mention("Hawaii"))], 1)
    with pytest.raises(TupleError) as raised:
        parse_tuple_string("(Obama, person) (Hawaii location)", "ner")
    assert raised.value.offset == 16
    with pytest.raises(TupleError, match="one Trigger"):
        parse_tuple_string("(Type: Attack, Attacker: troops)", "ee")
    with pytest.raises(TupleError, match="never closed"):
        parse_tuple_string("(Obama, born in, Hawaii", "re")
    with pytest.raises(TupleError, match="a relation is"):
        parse_tuple_string("(Obama, born in, Honolulu, Hawaii)", "re")
    with pytest.raises(TupleError, match="4 comma-separated parts and 0 of the inner ones are relation labels"):
        parse_tuple_string("(Obama, born in, Honolulu, Hawaii)", "re", Schema(relation=["lives in"]))
    assert parse_tuple_string("(Obama, born in, Hawaii) (Obama; US)", "re", strict=False) == (
        [Relation("born in", Mention("Obama"), Mention("Hawaii"))], 1)


TUPLE_LINES = [
    {"id": "s1", "text": "Barack Obama was born in Hawaii.", "image": "img/a.jpg", "task": "ner",
     "output": "(Barack Obama, person); (Hawaii, location)"},
    {"id": "s2", "text": "Barack Obama was born in Hawaii.", "task": "re", "output": "(Barack Obama, born in, Hawaii)"},
    {"id": 3, "text": "Troops fired on the crowd.", "audio": "aud/c.wav", "task": "ee",
     "output": "(Type: Attack, Trigger: fired, Attacker: Troops, Target: crowd, Instrument: None)"},
    {"id": "v4", "video": "vid/d.mp4", "task": "ner", "output": "None"},
]


@pytest.fixture
def tuples(tmp_path):
    source = write(tmp_path / "muie" / "test.jsonl", "".join(json.dumps(line) + "\n" for line in TUPLE_LINES))
    make_images(tmp_path / "muie" / "img", "a.jpg")
    write(tmp_path / "muie" / "aud" / "c.wav", "RIFF....WAVE")
    write(tmp_path / "muie" / "vid" / "d.mp4", "....ftypisom")
    return source, tmp_path


def test_tuple_lines_become_rows_of_each_task(tuples):
    source, tmp = tuples
    out = tmp / "muie.tsv"
    muie_tuples_to_tsv.main(["--tuples", str(source), "--out", str(out)])
    schema = {"entity": ["location", "person"], "relation": ["born in"], "event": ["Attack"],
              "role": ["Attacker", "Target"]}
    assert read_rows(out) == [
        ["s1", "img/a.jpg", "", "", "Barack Obama was born in Hawaii.",
         annotation("test", entities=[{"type": "person", "mention": "Barack Obama"},
                                      {"type": "location", "mention": "Hawaii"}], schema=schema)],
        ["s2", "", "", "", "Barack Obama was born in Hawaii.",
         annotation("test", relations=[{"label": "born in", "head": {"mention": "Barack Obama"},
                                        "tail": {"mention": "Hawaii"}}], schema=schema)],
        ["3", "", "", "aud/c.wav", "Troops fired on the crowd.",
         annotation("test", events=[{"type": "Attack", "trigger": {"mention": "fired"},
                             "arguments": [{"role": "Attacker", "mention": "Troops"},
                                           {"role": "Target", "mention": "crowd"}]}], schema=schema)],
        ["v4", "", "vid/d.mp4", "", "", annotation("test", entities=[], schema=schema)]]


def test_tuple_lines_missing_image_both_ways(tuples, capsys):
    source, tmp = tuples
    (tmp / "muie" / "img" / "a.jpg").unlink()
    out = tmp / "out.tsv"
    message = error_of(muie_tuples_to_tsv.main, ["--tuples", str(source), "--out", str(out)])
    assert message.startswith(f"error: {source}:1: column 1 (character): image file not found: "
                              f"{tmp / 'muie' / 'img' / 'a.jpg'}")
    muie_tuples_to_tsv.main(["--tuples", str(source), "--out", str(out), "--text-only-missing"])
    assert read_rows(out)[0][:5] == ["s1", "", "", "", "Barack Obama was born in Hawaii."]
    assert "1 rows without their missing image" in capsys.readouterr().out


def test_tuple_lines_malformed_output_is_located_at_the_bad_tuple(tuples):
    source, tmp = tuples
    line = json.dumps({"id": "s9", "text": "Obama, in Hawaii", "task": "ner",
                       "output": "(Obama, person) (Hawaii location)"})
    bad = write(tmp / "bad.jsonl", json.dumps(TUPLE_LINES[1]) + "\n" + line + "\n")
    message = error_of(muie_tuples_to_tsv.main, ["--tuples", str(bad), "--out", str(tmp / "o.tsv")])
    assert message.startswith(f"error: {bad}:2: column {line.index('(Hawaii') + 1} (character): "
                              f"output: an entity is (mention, type), got (Hawaii location)")
    line = json.dumps({"id": "s9", "task": "nre", "output": ""})
    bad = write(tmp / "bad.jsonl", line + "\n")
    message = error_of(muie_tuples_to_tsv.main, ["--tuples", str(bad), "--out", str(tmp / "o.tsv")])
    assert message.startswith(f"error: {bad}:1: column {line.index('task') } (character): 'task' must be one of")


def test_a_schema_file_is_checked_against_the_labels(tuples):
    source, tmp = tuples
    schema = write(tmp / "schema.json", json.dumps({"entity": ["person", "location"], "relation": ["born in"],
                                                    "event": ["Attack"], "role": ["Attacker"]}))
    message = error_of(muie_tuples_to_tsv.main, ["--tuples", str(source), "--out", str(tmp / "o.tsv"),
                                                 "--schema", str(schema)])
    assert message.startswith(f"error: {source}:3: column 1 (character): labels not in the schema: role 'Target'")


# ---- benchmarks/real_ie.py: the repositories' layouts ----------------------------------------------

def test_real_ie_finds_each_repository_layout_and_converts_it(tmp_path, monkeypatch, capsys):
    """The layouts as published (MNRE's 'mnre_val .txt', the zipped releases), found anywhere under
    --root and converted without images."""
    import zipfile
    root = tmp_path / "root"
    for split in ("train", "valid", "test"):
        write(root / "jefferyYu+UMT" / "data" / "twitter2015" / f"{split}.txt", TWITTER)
    gmner = root / "NUSTM+GMNER" / "Twitter10000_v2.0"
    for split in ("train", "dev", "test"):
        write(gmner / "txt" / f"{split}.txt", GMNER_TEXT)
    write(gmner / "xml" / "2001.xml", voc_xml("2001.jpg", 600, 450, [("Bill Walton", (146, 87, 338, 361))]))
    for name in ("mnre_train.txt", "mnre_val .txt", "mnre_test.txt"):
        write(root / "thecharm+MNRE" / "mnre_txt" / name, "\n".join(MNRE_LINES) + "\n")
    (root / "thecharm+MNRE" / "Version-1").mkdir()
    with zipfile.ZipFile(root / "thecharm+MNRE" / "Version-1" / "mnre_txt_org.zip", "w") as z:
        for split in ("train", "val", "test"):
            z.writestr(f"txt/ours_{split}.txt", "\n".join(MNRE_LINES) + "\n")
    (root / "limanling+m2e2" / "data").mkdir(parents=True)
    with zipfile.ZipFile(root / "limanling+m2e2" / "data" / "m2e2_annotations.zip", "w") as z:
        for name, content in (("text_only_event.json", M2E2_TEXT_ONLY), ("text_multimedia_event.json",
                              M2E2_MULTIMEDIA_TEXT), ("image_only_event.json", M2E2_IMAGE_ONLY),
                              ("image_multimedia_event.json", M2E2_MULTIMEDIA_IMAGES)):
            z.writestr(f"m2e2_annotations/{name}", json.dumps(content))
        z.writestr("m2e2_annotations/crossmedia_coref.txt", "VOA_1_3\tVOA_1_img1.jpg\tJustice:Arrest-Jail\n")
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    import real_ie
    with pytest.raises(SystemExit) as done:
        real_ie.main(["--root", str(root), "--work", str(tmp_path / "work"), "--no-train"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    headers = [line.split(" from ")[0] for line in out.splitlines() if line.startswith("== ")]
    assert headers == ["== gmner-Twitter10000_v2.0 (ner)", "== twitter2015 (ner)", "== m2e2 (ee)",
                       "== mnre-v1 (re)", "== mnre (re)"]
    assert "handled in train: 1 grounds left out with their missing media; 2 rows without their missing image" in out
    assert "event by type, all splits (2): Conflict:Attack 1, Justice:Arrest-Jail 1" in out
    assert json.loads((tmp_path / "work" / "mnre" / "schema.json").read_text()) == {
        "relation": ["/loc/loc/contain", "/per/org/member_of", "/per/per/peer"]}
