"""Model files: the fast scorer equals scikit-learn's, a save/load round trip, untrusted or
damaged files refused, and a newer file picked up without a restart."""

from __future__ import annotations

import logging
import pickle
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import skops.io

from banking.fraud import model as model_files
from banking.fraud.features import FEATURE_NAMES, Features
from banking.fraud.model import ModelFileError, ModelSource, TrainedModel
from banking.fraud.simulate import simulate
from banking.fraud.training import train_on_simulation, training_rows
from tests.fraud.conftest import TRAINED_AT


def _features(seed: int, customers: int = 40, days: int = 10) -> list[Features]:
    movements = (item.movement for item in simulate(seed, customers, days))
    return [row.features for row in training_rows(movements)]


def test_the_fast_scorer_equals_score_samples_on_many_rows(small_model: TrainedModel) -> None:
    rows = _features(41)
    rng = np.random.default_rng(41)
    # Rows of random values too, on and around the trees' thresholds.
    for _ in range(300):
        base = rows[int(rng.integers(len(rows)))].as_dict()
        noisy = {name: value * float(rng.uniform(0.5, 1.5)) for name, value in base.items()}
        rows.append(Features(**noisy))
    fast = np.array([small_model.raw_score(features) for features in rows])
    sklearn = small_model.raw_scores(rows)
    assert len(rows) > 1_000
    np.testing.assert_allclose(fast, sklearn, rtol=0, atol=1e-9)


def test_a_saved_model_loads_with_the_same_version_and_scores(
    small_model: TrainedModel, tmp_path: Path
) -> None:
    path = model_files.save(small_model, tmp_path)
    assert path.name == f"{small_model.version}.skops"
    assert small_model.version.startswith("if-20261201T120000-")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    loaded = model_files.load(path)
    assert loaded.version == small_model.version
    assert loaded.calibration == small_model.calibration
    rows = _features(42, 20, 5)
    assert [loaded.raw_score(f) for f in rows] == [small_model.raw_score(f) for f in rows]


class Intruder:
    """A type no model file should contain."""

    def __init__(self) -> None:
        self.command = "rm -rf /"


def _content(model: TrainedModel) -> dict[str, object]:
    return {
        "format": model_files.FILE_FORMAT,
        "version": model.version,
        "trained_at": model.trained_at.isoformat(),
        "feature_names": list(model.feature_names),
        "calibration": {
            "center": 0.4,
            "anchor": 0.6,
            "anchor_quantile": 0.99,
            "weight": 0.5,
            "labelled": False,
        },
        "training": {},
        "forest": model.forest,
    }


def test_a_file_with_an_untrusted_type_is_refused(
    small_model: TrainedModel, tmp_path: Path
) -> None:
    content = _content(small_model) | {"extra": Intruder()}
    path = tmp_path / "if-20991231T000000-00000000.skops"
    path.write_bytes(skops.io.dumps(content))
    with pytest.raises(ModelFileError, match=r"untrusted types.*Intruder"):
        model_files.load(path)


def test_a_pickle_a_truncated_file_and_a_tampered_one_are_refused(
    small_model: TrainedModel, tmp_path: Path
) -> None:
    pickled = tmp_path / "pickled.skops"
    pickled.write_bytes(pickle.dumps({"format": 1}))
    truncated = tmp_path / "truncated.skops"
    truncated.write_bytes(model_files.save(small_model, tmp_path / "good").read_bytes()[:500])
    tampered = tmp_path / "tampered.skops"
    tampered.write_bytes(skops.io.dumps(_content(small_model)))  # calibration changed
    for path in (pickled, truncated, tampered):
        with pytest.raises(ModelFileError):
            model_files.load(path)


def test_a_model_reading_unknown_features_is_refused(small_model: TrainedModel) -> None:
    with pytest.raises(ModelFileError, match="unknown features"):
        replace(small_model, feature_names=(*FEATURE_NAMES[:-1], "shoe_size"), version="")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_newer_model_file_is_picked_up_without_a_restart(
    small_model: TrainedModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    source = ModelSource(tmp_path, reload_seconds=30.0, clock=clock)
    assert source.current() is None  # no file yet: rules only

    model_files.save(small_model, tmp_path)
    clock.now += 30.0
    first = source.current()
    assert first is not None and first.version == small_model.version

    newer = train_on_simulation(
        6, customers=40, days=10, n_estimators=20, trained_at=TRAINED_AT + timedelta(days=1)
    )
    model_files.save(newer, tmp_path)
    clock.now += 10.0
    current = source.current()
    assert current is not None and current.version == small_model.version  # not looked yet
    clock.now += 20.0
    current = source.current()
    assert current is not None and current.version == newer.version

    # A half-copied or corrupt file, newer still, is ignored with a warning.
    (tmp_path / "if-20991231T000000-deadbeef.skops").write_bytes(b"PK\x03\x04 not a zip")
    clock.now += 30.0
    with caplog.at_level(logging.WARNING, logger="banking.fraud.model"):
        current = source.current()
    assert current is not None and current.version == newer.version
    assert "fraud model file ignored" in caplog.text
    assert "deadbeef" in caplog.text


def test_at_start_a_corrupt_newest_file_falls_back_to_the_previous_one(
    small_model: TrainedModel, tmp_path: Path
) -> None:
    model_files.save(small_model, tmp_path)
    (tmp_path / "if-20991231T000000-deadbeef.skops").write_bytes(b"garbage")
    current = ModelSource(tmp_path, reload_seconds=1.0).current()
    assert current is not None and current.version == small_model.version
