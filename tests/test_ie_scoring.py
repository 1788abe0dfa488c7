"""MUIE scoring: hand-computed precision/recall/F1, grounded F1 and mean IoU on small cases."""
import pytest

from ie.records import Argument, Entity, Event, Ground, Mention, Relation
from ie.scoring import IESample, annotation_records, canonical_mix, ie_scores, modality_mix, normalize


def box(x0, y0, x1, y1):
    return Ground("box", (float(x0), float(y0), float(x1), float(y1)))


def span(start, end):
    return Ground("span", (float(start), float(end)))


def square_polygon(x0, y0, x1, y1):
    return (float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1))


def ent(type_, text, ground=None):
    return Entity(type_, Mention(text, ground))


def score(predicted, gold, **fields):
    return ie_scores([IESample(predicted, gold, **fields)])


def test_exact_match_scores_one_and_counts_every_kind():
    gold = [ent("person", "Barack Obama")]
    s = score(list(gold), gold)
    assert (s["entity/precision"], s["entity/recall"], s["entity/f1"]) == (1.0, 1.0, 1.0)
    assert s["entity/grounded_f1"] == 1.0
    assert (s["entity/pred"], s["entity/gold"], s["entity/tp"], s["entity/grounded_tp"]) == (1, 1, 1, 1)
    assert s["relation/pred"] == s["relation/gold"] == 0 and "relation/f1" not in s
    assert s["samples"] == 1 and s["malformed"] == 0 and "mean_iou" not in s


def test_labels_and_mentions_compare_case_folded_and_single_spaced():
    assert normalize("  Barack\t OBAMA ") == "barack obama"
    s = score([ent("PERSON", "barack   obama")], [ent("person", "Barack Obama")])
    assert s["entity/f1"] == 1.0


def test_a_duplicate_prediction_is_one_true_positive_and_one_false_positive():
    s = score([ent("person", "Obama"), ent("person", "Obama")], [ent("person", "Obama")])
    assert (s["entity/tp"], s["entity/pred"], s["entity/gold"]) == (1, 2, 1)
    assert s["entity/precision"] == 0.5 and s["entity/recall"] == 1.0
    assert s["entity/f1"] == pytest.approx(2 / 3)


def test_a_name_the_gold_holds_twice_needs_two_predictions():
    s = score([ent("person", "Gina")], [ent("person", "Gina"), ent("person", "Gina")])
    assert s["entity/precision"] == 1.0 and s["entity/recall"] == 0.5


def test_right_type_wrong_mention_and_right_mention_wrong_type_are_both_misses():
    s = score([ent("person", "Obama Jr"), ent("location", "Hawaii")],
              [ent("person", "Obama"), ent("organization", "Hawaii")])
    assert (s["entity/tp"], s["entity/precision"], s["entity/recall"], s["entity/f1"]) == (0, 0.0, 0.0, 0.0)


def test_right_text_wrong_ground_counts_for_text_f1_only():
    # IoU of the two boxes: intersection 5x5 = 25, union 100 + 100 - 25 = 175
    s = score([ent("person", "Obama", box(5, 5, 15, 15))], [ent("person", "Obama", box(0, 0, 10, 10))])
    assert s["entity/f1"] == 1.0
    assert (s["entity/grounded_precision"], s["entity/grounded_recall"], s["entity/grounded_f1"]) == (0.0, 0.0, 0.0)
    assert s["entity/mean_iou"] == pytest.approx(25 / 175) and s["mean_iou"] == pytest.approx(25 / 175)


def test_iou_at_the_threshold_matches():
    # intersection 10x5 = 50, union 100 + 50 - 50 = 100 -> IoU 0.5 exactly
    s = score([ent("person", "Obama", box(0, 0, 10, 5))], [ent("person", "Obama", box(0, 0, 10, 10))])
    assert s["entity/grounded_f1"] == 1.0 and s["mean_iou"] == 0.5


def test_an_ungrounded_gold_mention_needs_an_ungrounded_prediction():
    gold = [ent("person", "Obama"), ent("location", "Hawaii")]
    s = score([ent("person", "Obama"), ent("location", "Hawaii", box(0, 0, 5, 5))], gold)
    assert s["entity/tp"] == 2 and s["entity/grounded_tp"] == 1
    assert s["entity/grounded_precision"] == 0.5 and s["entity/grounded_recall"] == 0.5
    assert "mean_iou" not in s  # no gold mention is grounded


def test_a_missing_ground_where_the_gold_has_one_fails_and_counts_zero_iou():
    s = score([ent("person", "Obama")], [ent("person", "Obama", box(0, 0, 10, 10))])
    assert s["entity/f1"] == 1.0 and s["entity/grounded_f1"] == 0.0 and s["mean_iou"] == 0.0


def test_grounded_matching_is_a_maximum_matching_not_greedy():
    # Two golds named alike. p1 overlaps g1 (IoU 9/11) and g2 (7/13); p2 overlaps only g1 (7/13).
    # Taking the best IoU first (p1-g1) would leave p2 unmatched; the maximum matching pairs both.
    g1, g2 = box(5, 0, 15, 10), box(9, 0, 19, 10)
    p1, p2 = box(6, 0, 16, 10), box(2, 0, 12, 10)
    s = score([ent("person", "Gina", p1), ent("person", "Gina", p2)],
              [ent("person", "Gina", g1), ent("person", "Gina", g2)])
    assert s["entity/grounded_tp"] == 2 and s["entity/grounded_f1"] == 1.0
    # mean IoU pairs duplicates for the largest IoU sum: p1-g2 + p2-g1 = 14/13 beats p1-g1 + p2-g2 = 9/11 + 3/17
    assert s["mean_iou"] == pytest.approx(7 / 13)


def test_duplicate_grounded_predictions_match_once():
    gold = [ent("person", "Obama", box(0, 0, 10, 10))]
    s = score([ent("person", "Obama", box(0, 0, 10, 10)), ent("person", "Obama", box(1, 0, 10, 10))], gold)
    assert s["entity/grounded_tp"] == 1 and s["entity/grounded_precision"] == 0.5
    assert s["mean_iou"] == 1.0  # the better of the two duplicates is the pair


def test_relations_need_label_head_and_tail_and_both_grounds():
    gold = [Relation("member of", Mention("Reyes", box(0, 0, 10, 10)), Mention("Padres")),
            Relation("peer", Mention("Reyes"), Mention("Paddack"))]
    predicted = [Relation("MEMBER OF", Mention("Reyes", box(0, 0, 10, 10)), Mention("Padres", box(0, 0, 4, 4))),
                 Relation("peer", Mention("Paddack"), Mention("Reyes")),  # swapped direction
                 Relation("peer", Mention("Reyes"), Mention("Paddack"))]
    s = score(predicted, gold)
    assert (s["relation/tp"], s["relation/pred"], s["relation/gold"]) == (2, 3, 2)
    assert s["relation/precision"] == pytest.approx(2 / 3) and s["relation/recall"] == 1.0
    assert s["relation/f1"] == pytest.approx(0.8)
    # the first relation's tail was predicted with a box where the gold has none
    assert s["relation/grounded_tp"] == 1
    assert s["relation/grounded_f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert s["relation/mean_iou"] == 1.0


def test_triggers_and_arguments_score_separately():
    gold = [Event("Conflict:Attack", Mention("fired"),
                  (Argument("Attacker", Mention("soldiers")), Argument("Target", Mention("crowd")))),
            Event("Life:Die", Mention("killed"), (Argument("Victim", Mention("crowd")),))]
    predicted = [Event("Conflict:Attack", Mention("shot"),
                       (Argument("Attacker", Mention("soldiers")), Argument("Target", Mention("protesters")))),
                 Event("Life:Injure", Mention("killed"), (Argument("Victim", Mention("crowd")),))]
    s = score(predicted, gold)
    assert (s["trigger/tp"], s["trigger/f1"]) == (0, 0.0)
    # arguments: (Attack, Attacker, soldiers) matches; Target text and the Injure/Die type do not
    assert (s["argument/tp"], s["argument/pred"], s["argument/gold"]) == (1, 3, 3)
    assert s["argument/precision"] == pytest.approx(1 / 3) and s["argument/f1"] == pytest.approx(1 / 3)


def test_argument_grounds_and_time_spans():
    gold = [Event("Movement:Transport", Mention("arrived", span(1.0, 3.0)),
                  (Argument("Vehicle", Mention("vehicle", box(10, 10, 50, 50))),))]
    predicted = [Event("movement:transport", Mention("arrived", span(1.2, 3.0)),
                       (Argument("vehicle", Mention("vehicle", box(10, 10, 50, 30))),))]
    s = score(predicted, gold)
    assert s["trigger/grounded_f1"] == 1.0 and s["trigger/mean_iou"] == pytest.approx(0.9)  # 1.8 / 2.0
    assert s["argument/f1"] == 1.0 and s["argument/grounded_f1"] == 1.0  # IoU 800 / 1600 = 0.5
    assert s["mean_iou"] == pytest.approx((0.9 + 0.5) / 2)


def test_span_below_the_threshold_and_grounds_in_different_media():
    gold = [ent("person", "Obama", span(1.0, 3.0)), ent("location", "Hawaii", box(0, 0, 10, 10))]
    predicted = [ent("person", "Obama", span(2.0, 4.0)), ent("location", "Hawaii", span(0.0, 10.0))]
    s = score(predicted, gold)
    assert s["entity/tp"] == 2 and s["entity/grounded_tp"] == 0
    assert s["mean_iou"] == pytest.approx((1 / 3 + 0.0) / 2)


def test_masks_are_compared_at_the_original_image_size():
    two_squares = Ground("polygons", (square_polygon(0, 0, 10, 10), square_polygon(20, 0, 30, 10)))
    gold = [ent("person", "Obama", two_squares), ent("location", "Hawaii", Ground("polygons", (square_polygon(0, 0, 10, 10),)))]
    predicted = [ent("person", "Obama", box(0, 0, 10, 10)),  # half the mask: 100 of 200 pixels
                 ent("location", "Hawaii", Ground("polygons", (square_polygon(2, 2, 12, 12),)))]  # 64 / 136
    s = score(predicted, gold, image_size=(40, 20))
    assert s["entity/grounded_tp"] == 1
    assert s["mean_iou"] == pytest.approx((0.5 + 64 / 136) / 2)
    with pytest.raises(ValueError, match="image_size"):
        score(predicted, gold)


def test_empty_predictions_or_golds_define_zero_over_zero_as_zero():
    gold = [ent("person", "Obama"), ent("location", "Hawaii")]
    s = score([], gold)
    assert (s["entity/precision"], s["entity/recall"], s["entity/f1"]) == (0.0, 0.0, 0.0)
    s = score(gold, [])
    assert (s["entity/precision"], s["entity/recall"], s["entity/f1"]) == (0.0, 0.0, 0.0)
    s = score([], [])
    assert not any(key.endswith(("precision", "recall", "f1")) for key in s)
    assert s["entity/pred"] == s["entity/gold"] == 0 and s["samples"] == 1
    assert ie_scores([])["samples"] == 0


def test_micro_average_over_samples_and_matching_stays_within_a_sample():
    samples = [IESample([ent("person", "Obama")], [ent("person", "Obama")]),
               IESample([ent("person", "Hawaii")], [ent("person", "Gina"), ent("person", "Rob"), ent("person", "Obama")])]
    s = ie_scores(samples)
    assert s["entity/precision"] == 0.5 and s["entity/recall"] == 0.25
    assert s["entity/f1"] == pytest.approx(1 / 3)
    s = ie_scores([IESample([], [ent("person", "Obama")]), IESample([ent("person", "Obama")], [])])
    assert s["entity/tp"] == 0


def test_breakdown_per_modality_mix_and_malformed_total():
    samples = [dict(predicted=[ent("person", "Obama")], gold=[ent("person", "Obama")], mix="I+T", malformed=2),
               dict(predicted=[], gold=[ent("person", "Gina")], mix="T", malformed=1),
               dict(predicted=[ent("person", "Rob")], gold=[ent("person", "Rob")], mix="t+i")]
    s = ie_scores(samples)
    assert s["malformed"] == 3 and s["samples"] == 3
    assert s["mix/T+I/samples"] == 2 and s["mix/T+I/malformed"] == 2 and s["mix/T+I/entity/f1"] == 1.0
    assert s["mix/T/samples"] == 1 and s["mix/T/malformed"] == 1
    assert (s["mix/T/entity/precision"], s["mix/T/entity/recall"]) == (0.0, 0.0)
    assert s["entity/recall"] == pytest.approx(2 / 3)
    assert not any(key.startswith("mix/V") for key in s)
    assert [k for k in s if k.startswith("mix/") and k.endswith("/samples")] == ["mix/T/samples", "mix/T+I/samples"]


def test_breakdown_per_source_dataset_beside_the_mixes():
    samples = [IESample([ent("person", "Obama")], [ent("person", "Obama")], "T+I", dataset="twitter2015"),
               IESample([ent("person", "Gina")], [ent("place", "Gina")], "T+I", dataset="twitter2017", malformed=1),
               IESample([ent("person", "Rob")], [ent("person", "Rob"), ent("place", "Rome")], "T",
                        dataset="twitter2017"),
               IESample([], [ent("person", "Ann")], "T")]
    s = ie_scores(samples)
    assert s["dataset/twitter2015/samples"] == 1 and s["dataset/twitter2015/entity/f1"] == 1.0
    assert s["dataset/twitter2017/samples"] == 2 and s["dataset/twitter2017/malformed"] == 1
    assert s["dataset/twitter2017/entity/precision"] == 0.5
    assert s["dataset/twitter2017/entity/recall"] == pytest.approx(1 / 3)
    assert s["samples"] == 4 and s["entity/tp"] == 2  # the sample naming no dataset counts in the total only
    groups = [k[:-len("samples")] for k in s if k.endswith("/samples")]
    assert groups == ["mix/T/", "mix/T+I/", "dataset/twitter2015/", "dataset/twitter2017/"]
    for bad in ("", "a/b", 7):
        with pytest.raises(ValueError, match="dataset"):
            ie_scores([IESample([], [], dataset=bad)])


def test_mixes_are_written_canonically_and_checked():
    assert canonical_mix("A+I+T") == "T+I+A" and canonical_mix("a + v") == "V+A"
    assert modality_mix(text=True, image=True, audio=True) == "T+I+A" and modality_mix(video=True) == "V"
    for bad in ("X", "T+T", "", "T+"):
        with pytest.raises(ValueError):
            canonical_mix(bad)
    with pytest.raises(ValueError):
        modality_mix()
    with pytest.raises(ValueError, match="malformed"):
        ie_scores([IESample([], [], malformed=-1)])
    with pytest.raises(TypeError):
        ie_scores([IESample(["Obama"], [])])


def test_samples_from_annotation_cells_and_tuples():
    gold = annotation_records({"entities": [{"type": "person", "mention": "Obama", "ground": {"box": [0, 0, 10, 10]}}],
                               "events": [{"type": "Attack", "trigger": {"mention": "fired"},
                                           "arguments": [{"role": "Attacker", "mention": "troops"}]}],
                               "schema": {"entity": ["person"]}})
    assert gold == [ent("person", "Obama", box(0, 0, 10, 10)),
                    Event("Attack", Mention("fired"), (Argument("Attacker", Mention("troops")),))]
    s = ie_scores([(gold, gold, "T+I", None, 1)])
    assert s["entity/grounded_f1"] == s["trigger/f1"] == s["argument/f1"] == 1.0
    assert s["mix/T+I/malformed"] == 1 and s["mean_iou"] == 1.0


def test_predicted_empty_box_and_zero_length_span_are_scored_not_refused():
    """A model may put a box's corners or a span's ends in one bin; scoring reads such outputs."""
    predicted = {"entities": [{"type": "shape", "mention": "red circle", "ground": {"box": [5, 5, 5, 5]}},
                              {"type": "sound", "mention": "low tone", "ground": {"span": [0.5, 0.5]}}]}
    gold = {"entities": [{"type": "shape", "mention": "red circle", "ground": {"box": [0, 0, 10, 10]}},
                         {"type": "sound", "mention": "low tone", "ground": {"span": [0.0, 1.0]}}]}
    scores = ie_scores([IESample(annotation_records(predicted), annotation_records(gold), "I+A", (20, 20))])
    assert scores["entity/f1"] == 1.0 and scores["entity/grounded_f1"] == 0.0
