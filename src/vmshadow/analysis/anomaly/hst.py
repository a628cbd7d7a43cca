"""Per-VMN behavioural anomaly detection with Half-Space Trees, thresholded on each VMN's own benign scores."""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from river import anomaly

from vmshadow.analysis.anomaly.features import FEATURE_NAMES, LIMITS, Features, extract_features
from vmshadow.analysis.anomaly.model_codec import ModelStateError, decode_model, encode_model, river_version
from vmshadow.analysis.detector import Detector, DetectorSettings
from vmshadow.analysis.registry import register
from vmshadow.domain.finding import Finding, FindingKind, Severity
from vmshadow.domain.flow import Flow
from vmshadow.domain.ids import stable_id
from vmshadow.domain.net import address_text, is_unicast


def quantile(values: list[float], q: float) -> float:
    """The q-quantile of `values` (nearest rank, so it is always one of the values).

    >>> quantile([0.1, 0.2, 0.3, 0.4], 0.5)
    0.2
    >>> quantile([0.1, 0.2, 0.3, 0.4], 1.0)
    0.4
    """
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def threat_score(anomaly_score: float, threshold: float) -> float:
    """Map an anomaly score above the VMN's threshold onto a finding score in [0.2, 0.8] (LOW to HIGH): an
    anomaly alone is weaker evidence than a hunting rule, so it never reaches CRITICAL.

    >>> threat_score(0.5, 0.5), threat_score(1.0, 0.5)
    (0.2, 0.8)
    """
    excess = (anomaly_score - threshold) / (1.0 - threshold) if threshold < 1.0 else 1.0
    return 0.2 + 0.6 * min(1.0, max(0.0, excess))


@dataclass(frozen=True, slots=True)
class Judgement:
    """What the model made of one flow: its anomaly score (None while the VMN's model does not score yet) and
    whether it cleared the threshold (its finding may still be held back by the quiet period)."""

    score: float | None = None
    alarm: bool = False


@dataclass(slots=True)
class VMNModel:
    """One VMN's model and where it stands: buffering, warming up, calibrating, or detecting."""

    flows: int = 0  # flows learned
    pending: list[Features] = field(default_factory=list)  # the first flows, before the model is built
    model: Any = None  # a river pipeline (scaler | Half-Space Trees) once built
    scores: list[float] = field(default_factory=list)  # the latest scores of flows that raised nothing
    since_calibration: int = 0  # scores added since the threshold was last computed
    threshold: float | None = None
    last_alert_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "flows": self.flows,
            "pending": [[x[n] for n in FEATURE_NAMES] for x in self.pending],  # names once, not per flow
            "model": encode_model(self.model) if self.model is not None else None,
            "scores": self.scores,
            "since_calibration": self.since_calibration,
            "threshold": self.threshold,
            "last_alert_ms": self.last_alert_ms,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], *, where: str) -> VMNModel:
        return cls(
            flows=int(d["flows"]),
            pending=[dict(zip(FEATURE_NAMES, map(float, x), strict=True)) for x in d["pending"]],
            model=decode_model(d["model"], where=where) if d["model"] is not None else None,
            scores=[float(s) for s in d["scores"]],
            since_calibration=int(d["since_calibration"]),
            threshold=None if d["threshold"] is None else float(d["threshold"]),
            last_alert_ms=None if d["last_alert_ms"] is None else int(d["last_alert_ms"]),
        )


@dataclass(frozen=True, slots=True)
class HSTSettings(DetectorSettings):
    n_trees: int = 10
    height: int = 6  # 2^(h+1) - 1 nodes per tree: 127 keep a VMN's model near 45 kB (river's default 8: 511)
    window_size: int = 250  # HST reference window (flows); a behaviour under 10 % of it looks anomalous
    buffer_flows: int = 16  # a model is built only once a VMN has sent this many flows
    warmup_flows: int = 250  # learned only, never scored (at least one full reference window)
    calibration_flows: int = 500  # the latest quiet scores kept; their (1 - budget) quantile is the threshold
    recalibrate_every: int = 50  # scores between two threshold updates (a quantile costs a sort)
    min_excess: float = 0.1  # share of the headroom above the threshold a score must clear (see _judge)
    false_alarm_budget: float = 0.01  # share of the VMN's benign flows that may exceed its threshold
    repeat_after_s: float = 300.0  # at most one finding per VMN in this long
    seed: int = 42
    max_vmns: int = 1024  # models kept (least recently active forgotten); each costs about 45 kB


@register
class HSTDetector(Detector[HSTSettings]):
    """Detects flows unlike a VMN's own history with an online Half-Space Trees model per VMN.

    Each flow a VMN initiates (`src_vmn`, else its source address) becomes features (`anomaly.features`: ln volumes,
    packets, duration, rate, bytes per packet, outbound share, port class, protocol, answered), scored and learned
    by river's `anomaly.HalfSpaceTrees` (`n_trees`, `height`, `window_size`; seeded from `seed` and the VMN's key,
    so runs repeat exactly) over fixed physical feature ranges (`features.LIMITS`; river's
    `preprocessing.MinMaxScaler` was measured and dropped: it hid big outliers, docs/detection.md). A VMN's state
    starts with an answered flow. The pipeline is analyze_traffic -> extract_features -> anomaly_score ->
    threat_level: the model is built after `buffer_flows` flows and learns `warmup_flows` flows without scoring;
    then the VMN's threshold is the (1 - `false_alarm_budget`) quantile of its latest `calibration_flows` scores (a
    false-alarm budget on its own scores, not a global constant), recomputed every `recalibrate_every` scores. A
    flow scoring above it by at least `min_excess` of the headroom (1 - threshold) raises a finding whose score
    rises from 0.2 (LOW, at the threshold) to 0.8 (HIGH, at 1.0); at most one per `repeat_after_s` per VMN. Every
    flow is learned, so the model follows drift (and slowly accepts a lasting new behaviour); calibration assumes
    the VMN's first flows are mostly benign. Snapshots hold each model pickled (base64) and are read back with an
    allow-list of river classes (`anomaly.model_codec`).
    Source: S. C. Tan, K. M. Ting, T. F. Liu, "Fast anomaly detection for streaming data", IJCAI 2011;
    river (online-ml/river). No MITRE ATT&CK technique: an anomaly is not a technique.
    """

    name = "anomaly.hst"
    version = "1.0"
    settings_type = HSTSettings

    def __init__(self, settings: HSTSettings | None = None, context: Any = None) -> None:
        super().__init__(settings, context)
        self._vmns: OrderedDict[str, VMNModel] = OrderedDict()  # least recently active first

    def observe(self, flow: Flow) -> list[Finding]:
        return self.judge(flow)[1]

    def judge(self, flow: Flow) -> tuple[Judgement, list[Finding]]:
        """`observe`, also returning the flow's score (for evaluation: ROC and PR curves need every score)."""
        if flow.src_port < 1024 <= flow.dst_port:
            return Judgement(), []  # servers' replies describe the client, not the VMN
        key = flow.src_vmn or address_text(flow.src_ip)
        if not flow.answered and key not in self._vmns:
            return Judgement(), []  # only an answered flow starts a model: a spoofed flood must not fill the table
        if not is_unicast(flow.dst_ip):  # after the cheap tests: it costs microseconds
            return Judgement(), []
        state = self._state(key)
        x = extract_features(flow)
        if state.model is None:
            state.pending.append(x)
            if len(state.pending) >= self.settings.buffer_flows:
                self._build(key, state)
            return Judgement(), []
        judgement, finding = self._judge(flow, key, state, x)
        state.model.learn_one(x)
        state.flows += 1
        return judgement, [finding] if finding is not None else []

    def score(self, flow: Flow) -> float | None:
        """The score the flow's VMN model gives it now, learning nothing (None while that model does not score)."""
        state = self._vmns.get(flow.src_vmn or address_text(flow.src_ip))
        if state is None or state.model is None or state.flows < self.settings.warmup_flows:
            return None
        return float(state.model.score_one(extract_features(flow)))

    def _state(self, key: str) -> VMNModel:
        state = self._vmns.get(key)
        if state is None:
            state = self._vmns[key] = VMNModel()
            if len(self._vmns) > self.settings.max_vmns:
                self._vmns.popitem(last=False)
        else:
            self._vmns.move_to_end(key)
        return state

    def _build(self, key: str, state: VMNModel) -> None:
        s = self.settings
        seed = s.seed ^ zlib.crc32(key.encode())  # stable across processes, unlike hash()
        limits: dict[Hashable, tuple[float, float]] = {k: v for k, v in LIMITS.items()}  # noqa: C416  (widens the key type for river)
        hst = anomaly.HalfSpaceTrees(
            n_trees=s.n_trees, height=s.height, window_size=s.window_size, limits=limits, seed=seed
        )
        state.model = hst
        for x in state.pending:
            state.model.learn_one(x)
        state.flows = len(state.pending)
        state.pending = []

    def _judge(self, flow: Flow, key: str, state: VMNModel, x: Features) -> tuple[Judgement, Finding | None]:
        s = self.settings
        if state.flows < s.warmup_flows:
            return Judgement(), None
        score = float(state.model.score_one(x))
        threshold = state.threshold
        self._calibrate(state, score)
        # When the trees' reference window moves on, a recurring behaviour's score steps a little (measured: an
        # identical DNS lookup 0.587 -> 0.589; browsing's top plateau 0.61 <-> 0.68): clearing the threshold by
        # a share of the headroom keeps those steps from becoming alarms.
        if threshold is None or score <= threshold + self.settings.min_excess * (1.0 - threshold):
            return Judgement(score), None
        at_ms = int(flow.last_seen_at.timestamp() * 1000)
        if state.last_alert_ms is not None and at_ms - state.last_alert_ms < s.repeat_after_s * 1000:
            return Judgement(score, alarm=True), None
        state.last_alert_ms = at_ms
        return Judgement(score, alarm=True), self._finding(flow, key, state, x, score, threshold)

    def _calibrate(self, state: VMNModel, score: float) -> None:
        # A rolling calibration follows the scores' drift as the trees' reference windows move on. Every score
        # counts: leaving the alarms out would pull the quantile down with each one (measured: 10 % alarms), and
        # counting them at the threshold would pin it there when the reference window shifts the scores up.
        # The price: a burst of more than budget x calibration_flows attack flows lifts the threshold a little.
        s = self.settings
        state.scores.append(score)
        if len(state.scores) > s.calibration_flows:
            del state.scores[0]
        state.since_calibration += 1
        full = len(state.scores) >= s.calibration_flows
        if full and (state.threshold is None or state.since_calibration >= s.recalibrate_every):
            state.threshold = quantile(state.scores, 1.0 - s.false_alarm_budget)
            state.since_calibration = 0

    def _finding(self, flow: Flow, key: str, state: VMNModel, x: Features, score: float, threshold: float) -> Finding:
        s = self.settings
        level = threat_score(score, threshold)
        measured: dict[str, float | int | str] = {
            "anomaly_score": round(score, 4),
            "threshold": round(threshold, 4),
            "false_alarm_budget": s.false_alarm_budget,
            "flows_learned": state.flows,
        }
        measured.update({f"feature_{k}": round(v, 3) for k, v in x.items()})
        return Finding(
            id=stable_id("find", self.name, key, flow.community_id, int(flow.last_seen_at.timestamp() * 1000)),
            kind=FindingKind.ANOMALY,
            severity=Severity.from_score(level),
            score=round(level, 4),
            detector=self.name,
            detector_version=self.version,
            first_seen_at=flow.first_seen_at,
            observed_at=flow.last_seen_at,
            src_ip=flow.src_ip,
            src_vmn=flow.src_vmn,
            protocol=flow.protocol,
            dst_ips=(flow.dst_ip,),
            dst_ports=(flow.dst_port,),
            community_ids=(flow.community_id,),
            measured=measured,
            summary=(
                f"{key}'s flow to {flow.dst_ip}:{flow.dst_port} scored {score:.3f} against its own threshold "
                f"{threshold:.3f} (false-alarm budget {s.false_alarm_budget:.1%}, {state.flows} flows learned)"
            ),
        )

    def snapshot(self) -> dict[str, Any]:
        return {"river": river_version(), "vmns": [[k, m.to_json()] for k, m in self._vmns.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("river") != river_version():
            raise ModelStateError(
                f"snapshot of anomaly.hst was taken with river {state.get('river')!r}, this is "
                f"{river_version()}: models cannot move between versions; start learning again"
            )
        vmns = OrderedDict((str(k), VMNModel.from_json(v, where=f"anomaly.hst vmns[{k!r}]")) for k, v in state["vmns"])
        self._vmns = vmns  # only once every model read back: a bad snapshot leaves the detector as it was
