"""
Hypothesis strategies for every ORB message, derived from the construct
declarations so that a new message type is covered without new code.
"""


import attrs
from construct import FocusedSeq, FormatField, Renamed
from hypothesis import strategies as st

from orb.protocol import messages as m
from orb.protocol._wiretypes import FixedBytes, PrefixedBytes, PrefixedText

# Field-specific limits that the declarations alone do not say.
BYTES_LIMITS = {"fid": (1, m.MAX_FID_BYTES), "successor": (0, m.MAX_FID_BYTES), "sealed": (49, 300), "owner_copy": (49, 300)}
TEXT_LIMITS = {
    "user_agent": m.MAX_USER_AGENT_BYTES,
    "text": m.MAX_ERROR_TEXT_BYTES,
    "name": m.MAX_NAME_BYTES,
}
LIST_LIMITS = {"entries": 20, "listen": m.MAX_LISTEN_ADDRESSES}
INT_LIMITS = {"deprecated": 1, "kind": 1, "more": 1}
# Fields whose valid range is narrower than their wire type's.
FIELD_STRATEGIES = {
    ("ANNOUNCE", "seq"): st.integers(1, 2**63 - 1),
    ("ANNOUNCE", "time"): st.integers(0, 2**53 - 1),
    ("ANNOUNCE", "load_permille"): st.integers(0, m.MAX_LOAD_PERMILLE),
    ("SECRET", "seq"): st.integers(1, 2**63 - 1),
    ("VOUCHER_ASK", "fid"): st.binary(max_size=m.MAX_FID_BYTES),
    ("VOUCHER_ASK", "after"): st.one_of(st.just(b""), st.binary(min_size=32, max_size=32)),
}


def _host():
    v4 = st.ip_addresses(v=4).map(str)
    v6 = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str)
    return st.one_of(v4, v6)


def _text(limit):
    return st.text(max_size=limit // 4)


def _for_subcon(name, sub):
    if isinstance(sub, Renamed):
        sub = sub.subcon
    if isinstance(sub, FormatField):
        top = INT_LIMITS.get(name, (1 << (8 * sub.length)) - 1)
        return st.integers(0, top)
    if isinstance(sub, FixedBytes):
        return st.binary(min_size=sub.length, max_size=sub.length)
    if isinstance(sub, PrefixedText):
        return _text(TEXT_LIMITS.get(name, 255))
    if isinstance(sub, PrefixedBytes):
        low, high = BYTES_LIMITS.get(name, (0, 300))
        return st.binary(min_size=low, max_size=high)
    raise TypeError(f"no strategy for {name}: {sub!r}")


def record_strategy(record_cls):
    fields = {}
    for a in attrs.fields(record_cls):
        if a.name == "host":
            fields[a.name] = _host()
        elif a.name == "port":
            fields[a.name] = st.integers(0, 0xFFFF)
        elif a.name in ("node_id",):
            fields[a.name] = st.binary(min_size=32, max_size=32)
        elif a.name == "fid":
            fields[a.name] = st.binary(min_size=1, max_size=m.MAX_FID_BYTES)
        elif a.name == "trace_id":
            fields[a.name] = st.binary(max_size=16)
        elif a.name == "log":
            fields[a.name] = st.binary(max_size=64)
        elif a.name in ("fid32", "signature"):
            size = {"fid32": 32, "signature": m.ETH_SIGNATURE_BYTES}[a.name]
            fields[a.name] = st.binary(min_size=size, max_size=size)
        else:
            width = {"timestamp": 64, "roles": 8, "reachability": 8, "rtt_ms": 32, "load_permille": 16, "version": 32,
                     "time_us": 64, "status": 8, "exec_us": 32,
                     "requests": 64, "bytes": 64, "epochs": 64, "expiry": 64}
            fields[a.name] = st.integers(0, (1 << width[a.name]) - 1)
    return st.builds(record_cls, **fields)


tlvs = st.lists(
    st.builds(m.Tlv, st.integers(0, 0x7FFF), st.binary(max_size=40)),
    max_size=3,
).map(tuple)


def message_strategy(cls):
    fields = {}
    for sub in cls.BODY.subcons:
        name = sub.name
        if name == "ext":
            continue
        if (cls.TYPE.name, name) in FIELD_STRATEGIES:
            fields[name] = FIELD_STRATEGIES[cls.TYPE.name, name]
        elif name in cls.NESTED:
            fields[name] = st.lists(record_strategy(cls.NESTED[name]), max_size=LIST_LIMITS.get(name, 5))
        elif name in cls.SINGLE:
            fields[name] = record_strategy(cls.SINGLE[name])
        elif isinstance(sub.subcon, FocusedSeq):  # an array of plain integers (HELLO versions)
            fields[name] = st.lists(st.integers(0, 255), min_size=1, max_size=10)
        else:
            fields[name] = _for_subcon(name, sub)
    return st.builds(cls, ext=tlvs, **fields)


any_message = st.one_of([message_strategy(cls) for cls in m.MESSAGES.values()])
