"""The copy budget: a kernel-side token bucket in front of a shadow port's mirror, so copies are shed first.

This kernel has no ``act_police`` (nor ``act_gact``): ``CONFIG_NET_ACT_POLICE`` is not set, and ``tc ... action
police`` fails with "Failed to load TC action module" (measured). So the budget is a small eBPF program of type
``sched_cls`` that runs on the same hook as the mirror, before it. Where the kernel has ``tcx`` (Linux 6.6+: eBPF
programs attached to the ingress/egress hook itself, run before the clsact filters) the program is attached there;
otherwise it is a direct-action ``cls_bpf`` filter one priority before the mirror. Its two verdicts mean the same
on both hooks:

- a packet within the budget gets ``TC_ACT_UNSPEC`` (tcx: ``TCX_NEXT``): tc goes on to the u32
  ``mirred egress mirror`` and the packet is copied;
- a packet over the budget gets ``TC_ACT_OK`` (tcx: ``TCX_PASS``): the mirror never runs, the packet goes on to
  the bridge as always, and the program counts it (packets and bytes) as shed.

Either way the live packet passes: the program has no verdict that drops or redirects it. On tcx a shed packet
skips the clsact classification altogether, which is what makes tcx the cheaper hook: with most small packets over
the budget, 1-4 % more of them got through than with ``cls_bpf`` (docs/benchmarks.md).

The bucket is GCRA (the "virtual scheduling" form of a token bucket) on ``bpf_ktime_get_ns``: a packet conforms
unless its theoretical arrival time is more than ``burst`` intervals ahead of now. It counts packets as the kernel
sees them at tc (a GSO super-packet is one), which is also what a reader of the shadow port receives, so the budget
bounds the reader's work. Two CPUs may update the arrival time at once; the race lets a few extra copies through,
never sheds live traffic, and the shed counters are atomic.

One program and its map (one per VMN) serve both directions of a shadow port: the budget is per VMN. The budget is
in the program (immediates) and in its map beside the shed counters, which a fresh process reads back from the kernel
through the program id (a tcx query, or a filter dump); a ``cls_bpf`` filter's name also records it
(``vmshadow-budget pps=N burst=M``). Programs are named ``vms_budget``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import struct
from dataclasses import dataclass

from vmshadow.domain.errors import BackendUnavailableError, InputError, Issue

FILTER_NAME_TAG = "vmshadow-budget"
_NAME = re.compile(rf"^{FILTER_NAME_TAG} pps=(\d+) burst=(\d+)$")

# bpf(2) commands, types and constants (uapi/linux/bpf.h)
_SYS_BPF = 321  # x86_64
_BPF_MAP_CREATE, _BPF_MAP_LOOKUP_ELEM, _BPF_MAP_UPDATE_ELEM, _BPF_PROG_LOAD = 0, 1, 2, 5
_BPF_PROG_ATTACH, _BPF_PROG_DETACH, _BPF_PROG_QUERY = 8, 9, 16
_BPF_PROG_GET_FD_BY_ID, _BPF_MAP_GET_FD_BY_ID, _BPF_OBJ_GET_INFO_BY_FD = 13, 14, 15
_BPF_TCX_INGRESS, _BPF_TCX_EGRESS = 46, 47
_BPF_F_REPLACE = 1 << 2
_BPF_MAP_TYPE_ARRAY = 2
_BPF_PROG_TYPE_SCHED_CLS = 3
_BPF_PSEUDO_MAP_FD = 1
_FN_MAP_LOOKUP_ELEM, _FN_KTIME_GET_NS = 1, 5
_TC_ACT_OK, _TC_ACT_UNSPEC = 0, -1
_ATTR_SIZE = 128
# theoretical arrival time (ns), shed packets, shed bytes; then the budget (pps, burst), which only readers use
_VALUE = struct.Struct("<QQQQQ")
_OLD_VALUE = struct.Struct("<QQQ")  # a program loaded before the map recorded its budget
PROGRAM_NAME = b"vms_budget"
_MAX_PROGS = 64
_NS_PER_S = 1_000_000_000
MAX_PPS = 10_000_000
MAX_BURST = 1_000_000


@dataclass(frozen=True, slots=True)
class CopyBudget:
    """How many copies per second a shadow port may take (`pps`), with bursts of up to `burst` packets."""

    pps: int
    burst: int

    def __post_init__(self) -> None:
        issues = []
        if not 1 <= self.pps <= MAX_PPS:
            issues.append(Issue("capture", f"copy budget {self.pps} packets/s is outside 1..{MAX_PPS}", field="pps"))
        if not 1 <= self.burst <= MAX_BURST:
            issues.append(Issue("capture", f"copy burst {self.burst} is outside 1..{MAX_BURST}", field="burst"))
        if issues:
            raise InputError(issues)

    @property
    def filter_name(self) -> str:
        return f"{FILTER_NAME_TAG} pps={self.pps} burst={self.burst}"

    @classmethod
    def parse(cls, text: str, *, field: str = "copy-budget") -> CopyBudget | None:
        """An operator's spelling: ``PPS`` (burst a tenth of it, at least 1), ``PPS/BURST``, or ``off`` (every
        packet copied: no budget). `InputError` naming `field` otherwise."""
        spelled = text.strip().lower()
        if spelled in ("off", "none"):
            return None
        found = re.fullmatch(r"(\d+)(?:/(\d+))?", spelled)
        if found is None:
            said = f"{text!r} is not PPS, PPS/BURST or off (e.g. 2000 or 2000/500)"
            raise InputError(Issue("capture", said, field=field))
        pps = int(found.group(1))
        burst = int(found.group(2)) if found.group(2) is not None else max(1, pps // 10)
        try:
            return cls(pps, burst)
        except InputError as exc:  # out of range: say which option carried it
            raise InputError([Issue("capture", i.message, field=field) for i in exc.issues]) from None

    @classmethod
    def from_filter_name(cls, name: str | None) -> CopyBudget | None:
        """The budget a filter name records, or None when the name is not ours."""
        found = _NAME.match(name or "")
        return cls(int(found.group(1)), int(found.group(2))) if found else None


@dataclass(frozen=True, slots=True)
class ShedCounters:
    """Copies the budget shed: the live packets passed on without a copy."""

    packets: int = 0
    bytes: int = 0


# --- the program ------------------------------------------------------------------------------------------------


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhI", code, (src << 4) | dst, off, imm & 0xFFFFFFFF)


def _ld_imm64(dst: int, value: int, src: int = 0) -> bytes:
    return _insn(0x18, dst, src, 0, value) + _insn(0, 0, 0, 0, value >> 32)


def program(map_fd: int, budget: CopyBudget) -> bytes:
    """The classifier's instructions (see the module doc). Registers: r6 skb, r7 skb->len, r8 the map value."""
    interval = max(1, _NS_PER_S // budget.pps)
    tolerance = interval * budget.burst
    insns = [
        _insn(0xBF, 6, 1),  # r6 = r1 (skb)
        _insn(0x61, 7, 6, 0),  # r7 = skb->len
        _insn(0x62, 10, 0, -4, 0),  # *(u32 *)(r10 - 4) = 0: the key
        _insn(0xBF, 2, 10),  # r2 = r10
        _insn(0x07, 2, 0, 0, -4),  # r2 += -4
        _ld_imm64(1, map_fd, _BPF_PSEUDO_MAP_FD),  # r1 = the map (2 slots)
        _insn(0x85, imm=_FN_MAP_LOOKUP_ELEM),  # r0 = bpf_map_lookup_elem(r1, r2)
        _insn(0x15, 0, 0, 13, 0),  # if r0 == 0 goto copy (no state: copy, never shed by mistake)
        _insn(0xBF, 8, 0),  # r8 = r0
        _insn(0x85, imm=_FN_KTIME_GET_NS),  # r0 = now
        _insn(0x79, 1, 8, 0),  # r1 = arrival time
        _ld_imm64(2, tolerance),  # r2 = tolerance (2 slots)
        _insn(0x0F, 2, 0),  # r2 += now
        _insn(0x2D, 1, 2, 8),  # if arrival > now + tolerance goto shed
        _insn(0x2D, 1, 0, 1),  # if arrival > now goto +1
        _insn(0xBF, 1, 0),  # arrival = now
        _ld_imm64(3, interval),  # r3 = interval (2 slots)
        _insn(0x0F, 1, 3),  # arrival += interval
        _insn(0x7B, 8, 1, 0),  # store arrival
        # copy:
        _insn(0xB7, 0, 0, 0, _TC_ACT_UNSPEC),  # r0 = TC_ACT_UNSPEC: on to the mirror
        _insn(0x95),  # exit
        # shed:
        _insn(0xB7, 1, 0, 0, 1),  # r1 = 1
        _insn(0xDB, 8, 1, 8, 0),  # lock *(u64 *)(r8 + 8) += 1
        _insn(0xDB, 8, 7, 16, 0),  # lock *(u64 *)(r8 + 16) += skb->len
        _insn(0xB7, 0, 0, 0, _TC_ACT_OK),  # r0 = TC_ACT_OK: classification ends, no copy, the packet passes
        _insn(0x95),  # exit
    ]
    return b"".join(insns)


# --- bpf(2) -----------------------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    result = _call(cmd, attr, what, missing_ok=False)
    assert result is not None
    return result


def _bpf_unless_gone(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int | None:
    """`_bpf`, but None when the interface or the program is not there (ENODEV, ENOENT)."""
    return _call(cmd, attr, what, missing_ok=True)


def _call(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str, *, missing_ok: bool) -> int | None:
    result = int(_libc.syscall(_SYS_BPF, cmd, attr, len(attr)))
    if result < 0:
        code = ctypes.get_errno()
        if missing_ok and code in (errno.ENOENT, errno.ENODEV):
            return None
        if code in (errno.ENOSYS, errno.EPERM):
            raise BackendUnavailableError(f"the copy budget needs bpf(2) as root: {what}: {os.strerror(code)}")
        raise BackendUnavailableError(f"the kernel refused to {what}: {os.strerror(code)} ({code})")
    return result


def _attr(fmt: str, *values: object) -> ctypes.Array[ctypes.c_char]:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(fmt, attr, 0, *values)
    return attr


@dataclass
class LoadedBudget:
    """A loaded budget program and its map; close the descriptors once a tc filter holds the program."""

    prog_fd: int
    map_fd: int

    def close(self) -> None:
        for fd in (self.prog_fd, self.map_fd):
            if fd >= 0:
                os.close(fd)
        self.prog_fd = self.map_fd = -1


def load(budget: CopyBudget) -> LoadedBudget:
    """Create the map (recording `budget` for readers) and load the classifier for `budget`."""
    map_fd = _bpf(
        _BPF_MAP_CREATE,
        _attr("<IIIIIII16s", _BPF_MAP_TYPE_ARRAY, 4, _VALUE.size, 1, 0, 0, 0, PROGRAM_NAME),
        "create the copy budget's map",
    )
    try:
        key = ctypes.create_string_buffer(struct.pack("<I", 0), 4)
        value = ctypes.create_string_buffer(_VALUE.pack(0, 0, 0, budget.pps, budget.burst), _VALUE.size)
        _bpf(
            _BPF_MAP_UPDATE_ELEM,
            _attr("<IIQQQ", map_fd, 0, ctypes.addressof(key), ctypes.addressof(value), 0),
            "record the copy budget in its map",
        )
    except BackendUnavailableError:
        os.close(map_fd)
        raise
    code = program(map_fd, budget)
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(16384)
    attr = _attr(
        "<IIQQIIQII16s",
        _BPF_PROG_TYPE_SCHED_CLS,
        len(code) // 8,
        ctypes.addressof(insns),
        ctypes.addressof(license_),
        1,
        len(log),
        ctypes.addressof(log),
        0,
        0,
        PROGRAM_NAME,
    )
    try:
        prog_fd = _bpf(_BPF_PROG_LOAD, attr, "load the copy budget program")
    except BackendUnavailableError as exc:
        os.close(map_fd)
        verifier = log.value.decode(errors="replace").strip().splitlines()[-3:]
        raise BackendUnavailableError(f"{exc}; verifier: {' | '.join(verifier)}") from exc
    return LoadedBudget(prog_fd, map_fd)


def program_fd(prog_id: int) -> int:
    """A descriptor for the loaded program `prog_id` (the caller closes it)."""
    return _bpf(_BPF_PROG_GET_FD_BY_ID, _attr("<I", prog_id), f"open budget program {prog_id}")


@dataclass(frozen=True, slots=True)
class ProgramState:
    """What a budget program's map holds: its budget (None for a program older than that record) and counters."""

    budget: CopyBudget | None
    shed: ShedCounters


def read(prog_id: int) -> ProgramState | None:
    """The state of budget program `prog_id`, or None when that program is not a copy budget (another tool's)."""
    prog_fd = program_fd(prog_id)
    try:
        info = ctypes.create_string_buffer(256)
        map_ids = (ctypes.c_uint32 * 4)()
        struct.pack_into("<IQ", info, 52, 4, ctypes.addressof(map_ids))
        _bpf(
            _BPF_OBJ_GET_INFO_BY_FD,
            _attr("<IIQ", prog_fd, len(info), ctypes.addressof(info)),
            "read the budget program's maps",
        )
        (count,) = struct.unpack_from("<I", info, 52)
        name = info.raw[64:80].rstrip(b"\0")
    finally:
        os.close(prog_fd)
    if count != 1 or name != PROGRAM_NAME:
        return None
    map_fd = _bpf(_BPF_MAP_GET_FD_BY_ID, _attr("<I", map_ids[0]), "open the budget's map")
    try:
        map_info = ctypes.create_string_buffer(80)
        _bpf(
            _BPF_OBJ_GET_INFO_BY_FD,
            _attr("<IIQ", map_fd, len(map_info), ctypes.addressof(map_info)),
            "read the budget's map",
        )
        (value_size,) = struct.unpack_from("<I", map_info, 12)
        if value_size not in (_VALUE.size, _OLD_VALUE.size):
            return None
        key = ctypes.create_string_buffer(struct.pack("<I", 0), 4)
        value = ctypes.create_string_buffer(value_size)
        _bpf(
            _BPF_MAP_LOOKUP_ELEM,
            _attr("<IIQQQ", map_fd, 0, ctypes.addressof(key), ctypes.addressof(value), 0),
            "read the budget's counters",
        )
    finally:
        os.close(map_fd)
    if value_size == _OLD_VALUE.size:
        _, packets, nbytes = _OLD_VALUE.unpack(value.raw)
        return ProgramState(None, ShedCounters(packets=packets, bytes=nbytes))
    _, packets, nbytes, pps, burst = _VALUE.unpack(value.raw)
    try:
        budget: CopyBudget | None = CopyBudget(pps, burst)
    except InputError:
        budget = None
    return ProgramState(budget, ShedCounters(packets=packets, bytes=nbytes))


def shed_counters(prog_id: int) -> ShedCounters:
    """What the program `prog_id` (as a tc filter dump or a tcx query names it) has shed so far."""
    state = read(prog_id)
    if state is None:
        raise BackendUnavailableError(f"program {prog_id} is not a copy budget")
    return state.shed


# --- tcx: programs on the hook itself (Linux 6.6+) -------------------------------------------------------------

_TCX_ATTACH_TYPE = {"ingress": _BPF_TCX_INGRESS, "egress": _BPF_TCX_EGRESS}
_tcx_known: bool | None = None


def tcx_available() -> bool:
    """Whether this kernel attaches eBPF programs to tc hooks directly (tcx); asked once, of the loopback."""
    global _tcx_known
    if _tcx_known is None:
        try:
            tcx_programs(1, "ingress")
        except BackendUnavailableError:
            _tcx_known = False
        else:
            _tcx_known = True
    return _tcx_known


def tcx_programs(ifindex: int, hook: str) -> list[int]:
    """The ids of the programs on `ifindex`'s tcx `hook` ("ingress" or "egress"), in the order they run; none when
    the interface is gone."""
    ids = (ctypes.c_uint32 * _MAX_PROGS)()
    attr = _attr("<IIIIQI", ifindex, _TCX_ATTACH_TYPE[hook], 0, 0, ctypes.addressof(ids), _MAX_PROGS)
    if _bpf_unless_gone(_BPF_PROG_QUERY, attr, f"list the tcx {hook} programs of interface {ifindex}") is None:
        return []
    (count,) = struct.unpack_from("<I", attr, 24)
    return [int(ids[i]) for i in range(min(count, _MAX_PROGS))]


def tcx_attach(ifindex: int, hook: str, prog_fd: int, *, replacing: int | None = None) -> None:
    """Put the program `prog_fd` on `ifindex`'s tcx `hook`; with `replacing` (a program id on that hook), swap it in
    that program's place atomically (no packet sees neither). A program attached so outlives this process."""
    old_fd = program_fd(replacing) if replacing is not None else 0
    try:
        flags = _BPF_F_REPLACE if replacing is not None else 0
        attr = _attr("<IIIII", ifindex, prog_fd, _TCX_ATTACH_TYPE[hook], flags, old_fd)
        _bpf(_BPF_PROG_ATTACH, attr, f"attach the copy budget to the tcx {hook} hook of interface {ifindex}")
    finally:
        if replacing is not None:
            os.close(old_fd)


def tcx_detach(ifindex: int, hook: str, prog_id: int) -> bool:
    """Take program `prog_id` off `ifindex`'s tcx `hook`; False when it was not there (any more)."""
    try:
        prog_fd = program_fd(prog_id)
    except BackendUnavailableError:
        return False  # unloaded: nothing holds it on a hook
    try:
        attr = _attr("<III", ifindex, prog_fd, _TCX_ATTACH_TYPE[hook])
        return _bpf_unless_gone(_BPF_PROG_DETACH, attr, f"detach copy budget {prog_id}") is not None
    finally:
        os.close(prog_fd)
