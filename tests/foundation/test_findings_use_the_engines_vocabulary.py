"""A finding's change and verdict come from the engines' one vocabulary: every category
the diff can report (a mode-only change included) is a valid choice of the model."""
from rehearsals.models import Finding
from workers.engines.vocabulary import CATEGORIES, CHANGE_LABELS, CLASSES, VERDICT_LABELS


def test_every_diff_category_and_verdict_is_a_model_choice():
    assert set(Finding.Change.values) == set(CATEGORIES)
    assert set(Finding.Verdict.values) == set(CLASSES) | {""}
    assert Finding.Change("metadata_changed").label == CHANGE_LABELS["metadata_changed"]
    assert Finding.Verdict("corrupted_on_production").label == VERDICT_LABELS["corrupted_on_production"]


def test_a_mode_only_change_is_displayed_with_its_label():
    f = Finding(change="metadata_changed", verdict="")
    assert f.get_change_display() == "metadata differs (mode/owner)"
    assert f.get_verdict_display() == "—"
