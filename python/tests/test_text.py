"""ROUGE-L and the evaluator's text cleaning against rouge-score and the reference's clean()."""

import json

from rouge_score import rouge_scorer

import legion_rs

from conftest import EVAL_FIXTURE, assert_close


def test_rouge_l_matches_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    pairs = [json.loads(line) for line in open(EVAL_FIXTURE / "rouge_pairs.jsonl") if line.strip()]
    assert len(pairs) >= 300
    pairs.append({"target": "Ünïcode  CAFÉ naïve… running runners", "prediction": "café runner ran"})
    for pair in pairs:
        ours = legion_rs.rouge_l(pair["target"], pair["prediction"])
        theirs = scorer.score(pair["target"], pair["prediction"])["rougeL"]
        for key in ("precision", "recall", "fmeasure"):
            assert_close(ours[key], getattr(theirs, key), f"{pair}: {key}")


def test_clean_analysis_text_matches_the_reference(reference):
    for text in ["<p> The hand </p> [SEG] looks   wrong.\n", "", "no tags", "a <b>c</b> [SEG][SEG] d",
                 "unclosed < tag", "Upon examining the image. I have found: <p> x </p> [SEG]"]:
        assert legion_rs.clean_analysis_text(text) == reference.clean(text), text
