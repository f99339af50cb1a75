"""Reading what a card claims and writing results back: the sources, their order, and the one-line errors."""
from __future__ import annotations

import json

import pytest

from fggp_hub.errors import FggpHubError
from fggp_hub.eval import CardError, card_metrics, write_results_to_card
from fggp_hub.hub.records import card_results

_UNREADABLE_YAML = "---\nmodel-index: [\n---\n# a card\n"
_MALFORMED_INDEX = "---\nmodel-index:\n- name: x\n  results:\n  - task: {}\n---\n# a card\n"


def test_card_results_reads_the_card_then_eval_results_then_config(exported):
    _, folder = exported
    assert card_results(folder) == ({"top1": 71.25}, "card")
    results = json.loads((folder / "eval_results.json").read_text())
    (folder / "eval_results.json").write_text(json.dumps({**results, "top1": 60.0, "top5": 90.0}))
    assert card_results(folder) == ({"top1": 71.25}, "card")  # the model-index (what the Hub shows) wins
    (folder / "README.md").write_text("# a card without front matter\n")
    assert card_results(folder) == ({"top1": 60.0, "top5": 90.0}, "eval_results.json")
    (folder / "eval_results.json").unlink()
    assert card_results(folder) == ({"top1": 71.25}, "config.json")
    (folder / "config.json").unlink()
    assert card_results(folder) == ({}, None)


@pytest.mark.parametrize("card", [_UNREADABLE_YAML, _MALFORMED_INDEX], ids=["yaml", "model-index"])
def test_card_results_tolerates_an_unreadable_card_where_card_metrics_names_it(exported, card):
    """records (list, the leaderboard, info) skip a broken card; eval --check says what is wrong with it."""
    _, folder = exported
    (folder / "README.md").write_text(card)
    assert card_results(folder) == ({"top1": 71.25}, "eval_results.json")
    what = "unreadable YAML" if card is _UNREADABLE_YAML else "model-index is malformed"
    with pytest.raises(CardError, match=what):
        card_metrics(folder)


def test_unreadable_eval_results_json(exported):
    _, folder = exported
    (folder / "README.md").write_text("# no front matter\n")
    (folder / "eval_results.json").write_text("{not json")
    assert card_results(folder) == ({"top1": 71.25}, "config.json")
    with pytest.raises(CardError, match="eval_results.json is not valid JSON"):
        card_metrics(folder)


def test_a_folder_without_card_values_is_refused(tmp_path):
    folder = tmp_path / "not-an-export"
    folder.mkdir()
    (folder / "README.md").write_text("# just a readme\n")
    with pytest.raises(CardError, match="has no model card values"):
        card_metrics(folder)


def test_write_results_to_card_refuses_what_it_cannot_write(exported, tmp_path):
    _, folder = exported
    with pytest.raises(CardError, match="hold no top1, top5 or loss"):
        write_results_to_card(folder, {"dataset": "x", "sparsity": 0.9})
    (folder / "README.md").write_text(_UNREADABLE_YAML)
    with pytest.raises(CardError, match="cannot be parsed"):
        write_results_to_card(folder, {"top1": 1.0})
    (folder / "README.md").unlink()
    with pytest.raises(CardError, match="does not exist: export the model first"):
        write_results_to_card(folder, {"top1": 1.0})


def test_one_model_index_reader_the_headline_entry(exported):
    """card_results (list, the leaderboard, info) and card_metrics (eval --check) read the same entry: the
    card's first one. A result on a prefix of the split (eval --num-images --update-card) is its own entry."""
    _, folder = exported
    label = card_metrics(folder)["dataset"]
    write_results_to_card(folder, {"dataset": label, "split": "test", "top1": 50.0, "top5": 80.0,
                                   "num_images": 100, "dataset_size": 10000})
    assert card_results(folder) == ({"top1": 71.25}, "card")  # not the subset entry's top5
    assert card_metrics(folder)["top1"] == 71.25 and "top5" not in card_metrics(folder)
    assert card_metrics(folder, num_images=100)["top5"] == 80.0


def test_reading_and_writing_live_in_the_hub_card_module():
    import fggp_hub.eval
    import fggp_hub.eval.card_compare
    import fggp_hub.hub.records
    from fggp_hub.hub import card, errors

    assert fggp_hub.eval.card_metrics is fggp_hub.eval.card_compare.card_metrics is card.card_metrics
    assert fggp_hub.eval.write_results_to_card is fggp_hub.eval.card_compare.write_results_to_card is card.write_results_to_card
    assert fggp_hub.hub.records.card_results is card.card_results
    assert fggp_hub.eval.CardError is fggp_hub.eval.errors.CardError is errors.CardError


@pytest.mark.parametrize("broken", ["eval_results.json", "config.json"])
def test_a_broken_file_leaves_the_card_unwritten(exported, broken):
    """Everything the merge reads is read before README.md is rewritten: nothing is left half-updated."""
    _, folder = exported
    before = {name: (folder / name).read_bytes() for name in ("README.md", "eval_results.json")}
    (folder / broken).write_text("{not json")
    with pytest.raises(FggpHubError):  # CardError (eval_results.json) or CorruptCheckpointError (config.json)
        write_results_to_card(folder, {"dataset": "x", "split": "test", "top1": 12.5})
    assert (folder / "README.md").read_bytes() == before["README.md"]
