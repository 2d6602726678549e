"""A linearizability checker for register histories.

Each key is an independent read/write(/compare-and-set) register, so each
key's sub-history is checked on its own (P-compositionality: a history is
linearizable iff every per-key sub-history is).

Per key the search is Wing & Gong's, in Lowe's "just-in-time" form with
memoisation (the algorithm porcupine and knossos use):

* the history becomes a list of call and return events sorted by time; an
  operation whose outcome is unknown (timed out, connection lost, error reply:
  it may or may not have taken effect) has its return at +infinity;
* walking the list, a call is *linearized* when the register model accepts
  the operation in the current state: its call and return events are lifted
  out of the list, the operation is pushed on a stack, and the walk restarts
  at the head;
* reaching the return of an operation not yet linearized means the current
  order cannot be extended (that operation had to take effect before it
  returned): pop the last linearized operation, undo it, and try the next
  candidate after its call;
* a configuration (set of linearized operations, register value) already
  explored is never explored again (memoisation);
* success: every operation with a known outcome is linearized (operations with
  unknown outcome may be linearized or left out). Failure: the stack is empty
  and no candidate is left.

Real time: operation A precedes B iff A.complete < B.invoke (strictly); equal
timestamps count as concurrent, so clock granularity never causes a false
alarm.

The search is bounded (``max_states`` configurations per key, ``timeout_s``
in total, and an estimate of the memo size in bytes); beyond the bound the
result is ``unknown`` instead of a hang.

Usage::

    h = History()
    t = h.invoke("client-1", WRITE, "k", "v1")
    ...
    h.ok(t)                 # write acknowledged
    t = h.invoke("client-2", READ, "k")
    h.ok(t, value=b"v1")    # read returned v1 (None: key absent)
    t = h.invoke("client-3", WRITE, "k", "v2")
    h.info(t)               # timed out: unknown outcome
    res = check(h.ops())
    assert res.ok, res.explanation
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, Iterable, List, Optional, Tuple

READ = "read"
WRITE = "write"
CAS = "cas"
KINDS = (READ, WRITE, CAS)

INF = math.inf

OK = "ok"
FAIL = "fail"
UNKNOWN = "unknown"

DEFAULT_MAX_STATES = 1_000_000
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_MEMO_BYTES = 512 << 20


@dataclass
class Op:
    """One operation on one key.

    kind      READ, WRITE or CAS
    key       any hashable
    value     WRITE: the value written (None = delete); READ: the value the
              read returned (None = key absent); CAS: the new value
    invoke    time the client sent it
    complete  time the client got the answer; None or +inf: unknown outcome
    expected  CAS only: the value compared against
    cas_ok    CAS with known outcome: True if it swapped, False if it did not
    """

    kind: str
    key: Hashable
    value: Any
    invoke: float
    complete: Optional[float] = INF
    expected: Any = None
    cas_ok: Optional[bool] = None
    client: Any = None
    id: int = -1

    @property
    def unknown(self) -> bool:
        return self.complete is None or self.complete == INF

    def describe(self) -> str:
        end = "?" if self.unknown else f"{self.complete:.6f}"
        who = f"client {self.client} " if self.client is not None else ""
        if self.kind == READ:
            what = f"read -> {self.value!r}"
        elif self.kind == WRITE:
            what = f"write {self.value!r}"
        else:
            res = {True: "ok", False: "failed", None: "unknown"}[self.cas_ok]
            what = f"cas {self.expected!r} -> {self.value!r} ({res})"
        return f"#{self.id} {who}{what} [{self.invoke:.6f}, {end}]"


@dataclass
class KeyResult:
    key: Any
    status: str
    ops: int = 0                 # operations searched (after pruning)
    dropped: int = 0             # reads with unknown outcome / unobserved unknown writes
    states: int = 0              # configurations explored
    explanation: str = ""


@dataclass
class CheckResult:
    status: str                  # OK, FAIL or UNKNOWN
    explanation: str = ""
    key: Any = None              # first key that failed (or was unknown)
    per_key: Dict[Any, KeyResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def __str__(self) -> str:
        return f"{self.status}: {self.explanation}" if self.explanation else self.status


class SearchLimit(Exception):
    pass


# --------------------------------------------------------------------------
# the register model
# --------------------------------------------------------------------------

def _step(state, op: Op) -> Tuple[bool, Any]:
    """Apply op to a register holding ``state``: (allowed, new state)."""
    k = op.kind
    if k == READ:
        return state == op.value, state
    if k == WRITE:
        return True, op.value
    # CAS
    if op.cas_ok is True:
        return (True, op.value) if state == op.expected else (False, state)
    if op.cas_ok is False:
        return state != op.expected, state
    # unknown outcome: if it takes effect it swaps when the value matches
    return True, (op.value if state == op.expected else state)


def _validate(op: Op) -> None:
    if op.kind not in KINDS:
        raise ValueError(f"bad operation kind {op.kind!r}")
    if op.invoke is None or op.invoke != op.invoke or op.invoke == INF:
        raise ValueError(f"operation {op.describe()} has no invoke time")
    if not op.unknown and op.complete < op.invoke:
        raise ValueError(f"operation {op.describe()} completes before it is invoked")
    if op.kind == CAS and not op.unknown and op.cas_ok is None:
        raise ValueError(f"completed cas {op.describe()} needs cas_ok True/False")


# --------------------------------------------------------------------------
# per-key search
# --------------------------------------------------------------------------

def _prune(ops: List[Op], initial) -> Tuple[List[Op], int]:
    """Drop operations that cannot affect the outcome.

    * reads with unknown outcome (no value observed: no constraint);
    * if the key has no CAS: writes with unknown outcome whose value no read
      returned. Such a write, if linearized, must be followed directly by
      another write or by nothing (any read after it would return its value),
      so leaving it out keeps every linearization valid; and "never took
      effect" is always an allowed choice for it.
    """
    kept = [op for op in ops if not (op.kind == READ and op.unknown)]
    dropped = len(ops) - len(kept)
    if not any(op.kind == CAS for op in kept):
        observed = set()
        for op in kept:
            if op.kind == READ:
                observed.add(_hashable(op.value))
        k2 = [op for op in kept
              if not (op.kind == WRITE and op.unknown and _hashable(op.value) not in observed)]
        dropped += len(kept) - len(k2)
        kept = k2
    return kept, dropped


def _hashable(v):
    try:
        hash(v)
        return v
    except TypeError:
        return repr(v)


def _precheck(key, ops: List[Op], initial) -> Optional[str]:
    """Fast, readable explanations for the most common failures."""
    written = {_hashable(initial)}
    for op in ops:
        if op.kind in (WRITE, CAS):
            written.add(_hashable(op.value))
    for op in ops:
        if op.kind == READ and _hashable(op.value) not in written:
            return (f"key {key!r}: {op.describe()} returned a value that no operation "
                    f"wrote (initial value {initial!r})")
    return None


def _check_key(key, ops: List[Op], initial, max_states: int, deadline: float,
               max_memo_bytes: int) -> KeyResult:
    ops, dropped = _prune(ops, initial)
    res = KeyResult(key=key, status=OK, ops=len(ops), dropped=dropped)
    if not ops:
        return res
    pre = _precheck(key, ops, initial)
    if pre:
        res.status, res.explanation = FAIL, pre
        return res

    n = len(ops)
    # events: (time, 0 = call / 1 = return, op index). Calls sort before
    # returns at equal times: equal timestamps are concurrent.
    events = []
    for i, op in enumerate(ops):
        events.append((op.invoke, 0, i))
        events.append((INF if op.unknown else op.complete, 1, i))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    m = len(events)
    HEAD, TAIL = 0, m + 1
    nxt = list(range(1, m + 2)) + [TAIL]     # nxt[TAIL] = TAIL
    prv = [HEAD] + list(range(0, m + 1))    # prv[HEAD] = HEAD
    is_call = [False] * (m + 2)
    op_of = [-1] * (m + 2)
    ret_node = [0] * n
    for pos, (_, typ, i) in enumerate(events, start=1):
        is_call[pos] = typ == 0
        op_of[pos] = i
        if typ == 1:
            ret_node[i] = pos
    call_node = [0] * n
    for pos in range(1, m + 1):
        if is_call[pos]:
            call_node[op_of[pos]] = pos
    known = [not op.unknown for op in ops]

    def lift(node):
        nxt[prv[node]] = nxt[node]
        prv[nxt[node]] = prv[node]

    def unlift(node):
        nxt[prv[node]] = node
        prv[nxt[node]] = node

    remaining_known = sum(known)
    linearized = 0
    state = initial
    memo = set()
    stack: List[Tuple[int, Any]] = []
    entry = nxt[HEAD]
    states = 0
    per_entry_bytes = n // 8 + 120
    # for the failure explanation: the deepest point the search reached
    best_depth, best_block, best_state, best_stack = -1, None, initial, []

    while True:
        if remaining_known == 0:
            res.states = states
            return res
        if entry == TAIL:  # cannot happen while known ops remain; be safe
            raise AssertionError("walked off the event list")
        i = op_of[entry]
        if is_call[entry]:
            allowed, new_state = _step(state, ops[i])
            if allowed:
                new_lin = linearized | (1 << i)
                cfg = (new_lin, _hashable(new_state))
                if cfg not in memo:
                    memo.add(cfg)
                    states += 1
                    if states > max_states:
                        raise SearchLimit(f"key {key!r}: more than {max_states} configurations")
                    if states & 1023 == 0:
                        if time.monotonic() > deadline:
                            raise SearchLimit(f"key {key!r}: time limit reached after "
                                              f"{states} configurations")
                        if states * per_entry_bytes > max_memo_bytes:
                            raise SearchLimit(f"key {key!r}: memo larger than "
                                              f"{max_memo_bytes >> 20} MiB")
                    stack.append((entry, state))
                    state = new_state
                    linearized = new_lin
                    lift(entry)
                    lift(ret_node[i])
                    if known[i]:
                        remaining_known -= 1
                    entry = nxt[HEAD]
                    continue
            entry = nxt[entry]
            continue
        # a return event: op i had to be linearized before this point
        if len(stack) > best_depth:
            best_depth, best_block, best_state = len(stack), i, state
            best_stack = [op_of[c] for c, _ in stack]
        if not stack:
            res.status = FAIL
            res.states = states
            res.explanation = _explain(key, ops, best_block, best_state, best_stack, initial)
            return res
        c, prev_state = stack.pop()
        j = op_of[c]
        state = prev_state
        linearized &= ~(1 << j)
        unlift(ret_node[j])
        unlift(c)
        if known[j]:
            remaining_known += 1
        entry = nxt[c]


def _explain(key, ops: List[Op], block: Optional[int], state, prefix: List[int],
             initial, context: int = 6) -> str:
    lines = [f"key {key!r}: history is not linearizable ({len(ops)} operations)."]
    if block is None:
        return lines[0]
    b = ops[block]
    lines.append(f"Longest linearizable prefix: {len(prefix)} operations; after it the "
                 f"register holds {state!r}.")
    if prefix:
        tail = prefix[-context:]
        lines.append("  ...its last steps: " + "; ".join(ops[i].describe() for i in tail))
    why = ""
    if b.kind == READ:
        why = f" (it read {b.value!r})"
    elif b.kind == CAS:
        why = f" (compare with {b.expected!r})"
    lines.append(f"Then {b.describe()} cannot take effect before it returns{why}.")
    conc = [op for op in ops
            if op is not b and op.invoke <= (INF if b.unknown else b.complete)
            and (op.unknown or op.complete >= b.invoke)]
    if conc:
        # completed operations first (in time order), then the unknown-outcome
        # writes that started most recently
        done = sorted((o for o in conc if not o.unknown), key=lambda o: o.invoke)
        pending = sorted((o for o in conc if o.unknown), key=lambda o: -o.invoke)
        conc = done + pending
        lines.append("  operations concurrent with it: " +
                     "; ".join(o.describe() for o in conc[:context]) +
                     (f"; ... ({len(conc) - context} more)" if len(conc) > context else ""))
    return "\n".join(lines)


# --------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------

def check(ops: Iterable[Op], initial: Any = None, max_states: int = DEFAULT_MAX_STATES,
          timeout_s: float = DEFAULT_TIMEOUT_S, max_memo_bytes: int = DEFAULT_MAX_MEMO_BYTES,
          initial_by_key: Optional[Callable[[Any], Any]] = None) -> CheckResult:
    """Check a history of register operations (any number of keys).

    ``initial`` is every key's value before the history (None: absent), or
    ``initial_by_key(key)`` per key. Returns a CheckResult whose ``status`` is
    OK, FAIL (with an explanation naming the key and the operation that cannot
    be placed) or UNKNOWN (search bound reached).
    """
    ops = list(ops)
    by_key: Dict[Any, List[Op]] = {}
    for n, op in enumerate(ops):
        if op.id < 0:
            op.id = n
        _validate(op)
        by_key.setdefault(op.key, []).append(op)
    deadline = time.monotonic() + timeout_s
    result = CheckResult(status=OK)
    unknown_msgs = []
    for key in sorted(by_key, key=repr):
        init = initial_by_key(key) if initial_by_key else initial
        try:
            kr = _check_key(key, by_key[key], init, max_states, deadline, max_memo_bytes)
        except SearchLimit as e:
            kr = KeyResult(key=key, status=UNKNOWN, ops=len(by_key[key]),
                           explanation=f"search bound reached: {e}")
        result.per_key[key] = kr
        if kr.status == FAIL:
            result.status, result.key, result.explanation = FAIL, key, kr.explanation
            return result
        if kr.status == UNKNOWN:
            unknown_msgs.append(kr.explanation)
            if result.key is None:
                result.key = key
    if unknown_msgs:
        result.status = UNKNOWN
        result.explanation = "; ".join(unknown_msgs)
    else:
        total = sum(k.ops for k in result.per_key.values())
        states = sum(k.states for k in result.per_key.values())
        result.explanation = (f"{len(result.per_key)} keys, {total} operations checked, "
                              f"{states} configurations explored")
    return result


class History:
    """Thread-safe recorder of client operations with invoke/complete times.

    invoke() returns a handle; then exactly one of:
      ok(handle, value=...)   completed: READ -> value observed; CAS -> cas_ok
      fail(handle)            definitely did not take effect (dropped)
      info(handle)            unknown outcome (writes kept, completing at
                              +infinity; reads dropped by the checker)
    Operations never resolved are treated as unknown.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._ops: List[Op] = []
        self._failed: set = set()

    def invoke(self, client, kind: str, key, value=None, expected=None) -> int:
        assert kind in KINDS
        t = self.clock()
        with self._lock:
            op = Op(kind=kind, key=key, value=value, invoke=t, complete=INF,
                    expected=expected, client=client, id=len(self._ops))
            self._ops.append(op)
            return op.id

    def ok(self, handle: int, value=None, cas_ok: Optional[bool] = None) -> None:
        t = self.clock()
        with self._lock:
            op = self._ops[handle]
            op.complete = t
            if op.kind == READ:
                op.value = value
            elif op.kind == CAS:
                if cas_ok is None:
                    raise ValueError("ok() of a cas needs cas_ok")
                op.cas_ok = cas_ok

    def fail(self, handle: int) -> None:
        with self._lock:
            self._failed.add(handle)

    def info(self, handle: int) -> None:
        with self._lock:
            self._ops[handle].complete = INF

    def ops(self) -> List[Op]:
        with self._lock:
            return [op for op in self._ops if op.id not in self._failed]

    def summary(self) -> str:
        ops = self.ops()
        reads = [o for o in ops if o.kind == READ]
        writes = [o for o in ops if o.kind != READ]
        return (f"{len(ops)} ops: {sum(not o.unknown for o in reads)} reads ok, "
                f"{sum(o.unknown for o in reads)} reads failed, "
                f"{sum(not o.unknown for o in writes)} writes ok, "
                f"{sum(o.unknown for o in writes)} writes with unknown outcome")
