"""The trained model: an ``IsolationForest`` over the features of normal movements, its
calibration, and the files it lives in.

Files are skops (not pickle), one per version, named ``<version>.skops`` with the version
``if-<UTC trained-at YYYYmmddTHHMMSS>-<8 hex of a SHA-256 of the trees and calibration>`` also
stored inside. ``save`` writes a temporary file and renames it, so a reader never sees half a
file; ``load`` trusts only the types in ``TRUSTED_TYPES`` (beyond skops' own defaults) and
refuses a file with any other. ``ModelSource`` gives the newest valid file of a directory,
looking again at most every ``reload_seconds``: a corrupt or untrusted file is skipped with a
warning and the previous model stays.

Scoring one row through scikit-learn costs milliseconds of per-call overhead, so
``TrainedModel.raw_score`` walks the fitted trees' arrays itself, all trees at once with numpy;
it equals ``IsolationForest.score_samples`` (negated), which ``tests/fraud`` checks.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from banking.fraud.features import FEATURE_NAMES, Features

if TYPE_CHECKING:
    from sklearn.ensemble import IsolationForest

LOG = logging.getLogger(__name__)

FILE_FORMAT: Final = 1
FILE_SUFFIX: Final = ".skops"
VERSION_PREFIX: Final = "if-"
# Beyond skops' defaults (scikit-learn estimators, numpy arrays, builtins): the trees' arrays.
TRUSTED_TYPES: Final = ("sklearn.tree._tree.Tree",)
ANCHOR_SCORE: Final = 0.70  # what a normal row at the calibration's anchor quantile scores

MODEL_FEATURES: Final = (
    "amount_log",
    "is_outflow",
    "is_transfer",
    "is_tiny",
    "near_threshold",
    "count_1m",
    "count_1h",
    "count_24h",
    "sum_1h_log",
    "sum_24h_log",
    "quiet_log",
    "deviation_log",
    "zscore",
    "new_counterparty",
    "night",
    "declines_1h",
    "tiny_outflows_1h",
    "counterparties_in_24h",
    "counterparties_out_24h",
    "near_threshold_7d",
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


class ModelFileError(Exception):
    """A model file that cannot be used: unreadable, untrusted content, or not a model."""


@dataclass(frozen=True, slots=True)
class Calibration:
    """How a raw anomaly score (``-score_samples``, about 0.35-0.8) becomes the model's score
    in [0, 1], and how much of it the combined score takes.

    ``model_score = clip(ANCHOR_SCORE * (raw - center) / (anchor - center), 0, 1)``: the median
    normal row (``center``) scores 0, a normal row at the ``anchor_quantile`` of the training
    rows scores ``ANCHOR_SCORE``. ``combined = 1 - (1 - rules) * (1 - weight * model_score)``.
    """

    center: float
    anchor: float
    anchor_quantile: float
    weight: float
    labelled: bool  # chosen on reviewers' labels (else the defaults)

    def model_score(self, raw: float) -> float:
        span = self.anchor - self.center
        if span <= 0:
            return 0.0
        return min(1.0, max(0.0, ANCHOR_SCORE * (raw - self.center) / span))


class _CompiledForest:
    """The forest's trees stacked into flat arrays, leaves pointing at themselves, so that one
    row walks every tree at once: ``depth`` steps of a few numpy operations."""

    def __init__(self, forest: IsolationForest, n_features: int) -> None:
        features: list[IntArray] = []
        thresholds: list[FloatArray] = []
        lefts: list[IntArray] = []
        rights: list[IntArray] = []
        leaf_values: list[FloatArray] = []
        roots: list[int] = []
        offset = 0
        depth_max = 0
        subsets = forest.estimators_features_
        for estimator, subset in zip(forest.estimators_, subsets, strict=True):
            tree = estimator.tree_
            count = int(tree.node_count)
            left = np.asarray(tree.children_left, dtype=np.intp)
            right = np.asarray(tree.children_right, dtype=np.intp)
            leaf = left == -1
            own = np.arange(count, dtype=np.intp)
            depth = np.zeros(count, dtype=np.float64)
            for node in range(count):  # parents come before their children
                if not leaf[node]:
                    depth[left[node]] = depth[node] + 1
                    depth[right[node]] = depth[node] + 1
            depth_max = max(depth_max, int(depth.max()))
            feature = np.where(leaf, 0, np.asarray(tree.feature, dtype=np.intp))
            features.append(np.asarray(subset, dtype=np.intp)[feature])
            thresholds.append(np.asarray(tree.threshold, dtype=np.float64))
            lefts.append(np.where(leaf, own, left) + offset)
            rights.append(np.where(leaf, own, right) + offset)
            samples = np.asarray(tree.n_node_samples, dtype=np.float64)
            leaf_values.append(depth + _average_path_length(samples))
            roots.append(offset)
            offset += count
        self.feature = np.concatenate(features)
        self.threshold = np.concatenate(thresholds)
        self.left = np.concatenate(lefts)
        self.right = np.concatenate(rights)
        self.leaf_value = np.concatenate(leaf_values)
        self.roots = np.asarray(roots, dtype=np.intp)
        self.steps = depth_max
        self.n_features = n_features
        denominator = len(roots) * float(_average_path_length(np.array([forest.max_samples_]))[0])
        self.denominator = denominator

    def raw_score(self, row: Sequence[float]) -> float:
        """``-score_samples`` of one row: higher is more anomalous, in (0, 1]."""
        # scikit-learn's trees compare float32 inputs with float64 thresholds.
        x = np.asarray(row, dtype=np.float32).astype(np.float64)
        node = self.roots
        for _ in range(self.steps):
            go_left = x[self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        if self.denominator == 0:
            return 1.0
        return float(2.0 ** (-float(self.leaf_value[node].sum()) / self.denominator))


def _average_path_length(samples: FloatArray) -> FloatArray:
    """c(n): the average path length of an unsuccessful search in a binary tree of n nodes
    (Liu et al.; as scikit-learn defines it, 0 for n <= 1 and 1 for n == 2)."""
    result = np.zeros_like(samples, dtype=np.float64)
    result[samples == 2] = 1.0
    more = samples > 2
    n = samples[more]
    result[more] = 2.0 * (np.log(n - 1.0) + np.euler_gamma) - 2.0 * (n - 1.0) / n
    return result


@dataclass(slots=True)
class TrainedModel:
    """A fitted forest with its version, the features it reads, its calibration, and the
    figures of its training."""

    forest: IsolationForest
    feature_names: tuple[str, ...]
    calibration: Calibration
    trained_at: datetime
    training: dict[str, int]
    version: str = ""
    _compiled: _CompiledForest | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        unknown = set(self.feature_names) - set(FEATURE_NAMES)
        if unknown:
            raise ModelFileError(f"the model reads unknown features {sorted(unknown)}")
        if not self.version:
            self.version = f"{VERSION_PREFIX}{self.trained_at:%Y%m%dT%H%M%S}-{self.digest()}"

    def digest(self) -> str:
        """8 hex of a SHA-256 over the trees' arrays and the calibration."""
        sha = hashlib.sha256()
        for estimator in self.forest.estimators_:
            tree = estimator.tree_
            for array in (tree.children_left, tree.children_right, tree.feature, tree.threshold):
                sha.update(np.ascontiguousarray(array).tobytes())
        sha.update(repr(self.calibration).encode())
        sha.update(",".join(self.feature_names).encode())
        return sha.hexdigest()[:8]

    def row(self, features: Features) -> list[float]:
        return features.vector(self.feature_names)

    def raw_score(self, features: Features) -> float:
        """The forest's anomaly score of one movement (``-score_samples``)."""
        if self._compiled is None:
            self._compiled = _CompiledForest(self.forest, len(self.feature_names))
        return self._compiled.raw_score(self.row(features))

    def raw_scores(self, rows: Sequence[Features]) -> FloatArray:
        """The forest's anomaly scores of many movements at once (scikit-learn, batched)."""
        if not rows:
            return np.zeros(0)
        matrix = np.array([self.row(features) for features in rows], dtype=np.float64)
        return np.asarray(-self.forest.score_samples(matrix), dtype=np.float64)

    def model_score(self, features: Features) -> float:
        return self.calibration.model_score(self.raw_score(features))


def save(model: TrainedModel, directory: Path) -> Path:
    """Write ``model`` as ``<directory>/<version>.skops`` atomically; return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    content: dict[str, Any] = {
        "format": FILE_FORMAT,
        "version": model.version,
        "trained_at": model.trained_at.isoformat(),
        "feature_names": list(model.feature_names),
        "calibration": {
            "center": model.calibration.center,
            "anchor": model.calibration.anchor,
            "anchor_quantile": model.calibration.anchor_quantile,
            "weight": model.calibration.weight,
            "labelled": model.calibration.labelled,
        },
        "training": dict(model.training),
        "forest": model.forest,
    }
    import skops.io  # scikit-learn and SciPy only when a model file is used

    data = skops.io.dumps(content)
    target = directory / f"{model.version}{FILE_SUFFIX}"
    handle, temporary = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def load(path: Path) -> TrainedModel:
    """Read a model file written by ``save``; ``ModelFileError`` for anything else."""
    # scikit-learn and SciPy (over 100 MB) are imported only when a model file is used
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except Exception as error:  # skops raises many kinds for a damaged zip
        raise ModelFileError(f"{path.name} is not a readable skops file: {error}") from error
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise ModelFileError(f"{path.name} contains untrusted types {refused}")
    try:
        content = skops.io.load(path, trusted=list(TRUSTED_TYPES))
    except Exception as error:
        raise ModelFileError(f"{path.name} could not be loaded: {error}") from error
    return _model_of(path, content)


def _model_of(path: Path, content: object) -> TrainedModel:
    from sklearn import ensemble  # only when a model file is read (see load)

    if not isinstance(content, dict) or content.get("format") != FILE_FORMAT:
        raise ModelFileError(f"{path.name} is not a fraud model file (format {FILE_FORMAT})")
    try:
        forest = content["forest"]
        calibration = content["calibration"]
        model = TrainedModel(
            forest=forest,
            feature_names=tuple(str(name) for name in content["feature_names"]),
            calibration=Calibration(
                center=float(calibration["center"]),
                anchor=float(calibration["anchor"]),
                anchor_quantile=float(calibration["anchor_quantile"]),
                weight=float(calibration["weight"]),
                labelled=bool(calibration["labelled"]),
            ),
            trained_at=datetime.fromisoformat(str(content["trained_at"])),
            training={str(key): int(value) for key, value in content["training"].items()},
            version=str(content["version"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ModelFileError(f"{path.name} is missing a part of the model: {error}") from error
    if not isinstance(forest, ensemble.IsolationForest) or not hasattr(forest, "estimators_"):
        raise ModelFileError(f"{path.name} does not hold a fitted IsolationForest")
    if forest.n_features_in_ != len(model.feature_names):
        raise ModelFileError(f"{path.name}: the forest and its feature names disagree")
    if model.digest() != model.version.rsplit("-", 1)[-1]:
        raise ModelFileError(f"{path.name}: the content does not match version {model.version}")
    return model


class Models(Protocol):
    """Where the detector gets the current model from (None: rules only)."""

    def current(self) -> TrainedModel | None: ...


@dataclass(frozen=True, slots=True)
class FixedModel:
    """One model, always (evaluation, benchmarks, tests)."""

    model: TrainedModel | None

    def current(self) -> TrainedModel | None:
        return self.model


class ModelSource:
    """The newest valid model file of ``directory``, looked for again at most every
    ``reload_seconds`` (so a new ``banking fraud train`` is picked up without a restart)."""

    def __init__(
        self,
        directory: Path,
        reload_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not reload_seconds > 0 or math.isinf(reload_seconds):
            raise ValueError("reload_seconds must be a positive number")
        self._directory = directory
        self._reload_seconds = reload_seconds
        self._clock = clock
        self._checked_at: float | None = None
        self._model: TrainedModel | None = None
        self._path: Path | None = None
        self._refused: set[tuple[Path, int, int]] = set()  # (path, mtime_ns, size)

    @property
    def path(self) -> Path | None:
        """The file the current model came from."""
        return self._path

    def current(self) -> TrainedModel | None:
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= self._reload_seconds:
            self._checked_at = now
            self._refresh()
        return self._model

    def _refresh(self) -> None:
        for path in self._candidates():
            if path == self._path:
                return  # the newest valid file is the one loaded
            try:
                stat = path.stat()
            except OSError:
                continue  # removed meanwhile
            key = (path, stat.st_mtime_ns, stat.st_size)
            if key in self._refused:
                continue
            try:
                model = load(path)
            except ModelFileError as error:
                self._refused.add(key)
                LOG.warning("fraud model file ignored: %s", error)
                continue
            if self._model is not None:
                LOG.info("fraud model %s replaces %s", model.version, self._model.version)
            self._model, self._path = model, path
            return

    def _candidates(self) -> list[Path]:
        """The directory's model files, newest version first (the version starts with the
        training time, so names sort by age)."""
        try:
            names = [
                path
                for path in self._directory.iterdir()
                if path.name.startswith(VERSION_PREFIX) and path.name.endswith(FILE_SUFFIX)
            ]
        except OSError:
            return []
        return sorted(names, key=lambda path: path.name, reverse=True)
