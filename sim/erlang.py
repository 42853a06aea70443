"""Queueing-theory reference values for the ACD simulator (pure standard library).

The simulator is validated against two classical models of an inbound call
centre with ``N`` identical agents, Poisson arrivals at rate ``lambda`` and
exponential handling times with mean ``aht`` (``mu = 1 / aht``):

* **Erlang C** -- M/M/N, callers wait forever.  Standard results, see e.g.
  Gross, Shortle, Thompson & Harris, *Fundamentals of Queueing Theory*,
  section 2.3, or Koole, *Call Center Optimization*, chapter 4.
* **Erlang A** -- M/M/N+M, callers abandon after an exponential patience with
  mean ``patience`` (``theta = 1 / patience``).  Mandelbaum & Zeltyn, "The
  Palm/Erlang-A Queue, with Applications to Call Centers" (2004/2007), and
  Zeltyn & Mandelbaum, "Call centers with impatient customers: many-server
  asymptotics of the M/M/n+G queue", Queueing Systems 51 (2005).

Everything is computed without factorials (Erlang B recursion, log-space
sums), so loads of thousands of Erlangs are fine.  No numpy/scipy.

Conventions used by every ``*_metrics`` function (see :class:`Analytic`):

* ``service_level`` is over *all offered* calls: the fraction that is answered
  with a wait ``<= threshold``.  Calls that abandon never count as answered.
* ``asa`` (average speed of answer) is the mean wait of *answered* calls.
* ``abandon_rate`` is the fraction of offered calls that abandon.
* ``occupancy`` is carried load / N = lambda * (1 - P(Ab)) * aht / N.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = [
    "Analytic",
    "erlang_a_metrics",
    "erlang_b",
    "erlang_c",
    "erlang_c_metrics",
    "staffing",
]

# Erlang A sums are truncated once the remaining tail is below e**-_TAIL_LOG
# (about 4e-18) relative to the total probability mass.
_TAIL_LOG = 40.0
# Guard against pathological inputs (astronomically long queues).
_MAX_QUEUE_STATES = 5_000_000


@dataclass(frozen=True, slots=True)
class Analytic:
    """Analytic steady-state metrics the simulator is compared against."""

    model: str  # "erlang_c" or "erlang_a"
    offered_load: float  # A = lambda * aht (Erlangs)
    agents: int
    probability_wait: float  # P(wait > 0): an arriving call finds all agents busy
    service_level: float  # fraction of ALL offered calls answered within threshold
    asa: float  # mean wait (s) of ANSWERED calls
    abandon_rate: float  # fraction of offered calls that abandon (0 for Erlang C)
    occupancy: float  # fraction of agent time busy = carried load / N

    def to_dict(self) -> dict[str, str | int | float]:
        return asdict(self)


# ---------------------------------------------------------------------------
# validation helpers


def _check_agents(agents: int, *, minimum: int) -> int:
    if isinstance(agents, bool) or not isinstance(agents, int):
        raise TypeError(f"agents must be an int, got {agents!r}")
    if agents < minimum:
        raise ValueError(f"agents must be >= {minimum}, got {agents}")
    return agents


def _check_nonneg(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _check_pos(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _log1pexp(u: float) -> float:
    """log(1 + e**u) without overflow."""
    if u > 0:
        return u + math.log1p(math.exp(-u))
    return math.log1p(math.exp(u))


# ---------------------------------------------------------------------------
# Erlang B / Erlang C


def erlang_b(agents: int, offered_load: float) -> float:
    """Erlang B blocking probability B(N, A) of the M/M/N/N loss system.

    B(N, A) = (A**N / N!) / sum_{k=0..N} A**k / k!  (Erlang, 1917).  Evaluated
    with the standard stable recursion B(0) = 1,
    B(k) = A * B(k-1) / (k + A * B(k-1)), which never forms a factorial.
    """
    n = _check_agents(agents, minimum=0)
    a = _check_nonneg("offered_load", offered_load)
    b = 1.0
    for k in range(1, n + 1):
        ab = a * b
        b = ab / (k + ab)
    return b


def _log_inv_erlang_b(agents: int, offered_load: float) -> float:
    """log(1 / B(N, A)) for A > 0, in log space (B itself may underflow).

    From the recursion above: 1/B(k) = 1 + (k / A) * 1/B(k-1), 1/B(0) = 1, so
    L(k) = log(1 + exp(log(k / A) + L(k-1))).
    """
    log_a = math.log(offered_load)
    acc = 0.0
    for k in range(1, agents + 1):
        acc = _log1pexp(math.log(k) - log_a + acc)
    return acc


def erlang_c(agents: int, offered_load: float) -> float:
    """Erlang C probability of waiting C(N, A) = P(wait > 0) in the M/M/N queue.

    Standard identity C = N * B / (N - A * (1 - B)) with B = B(N, A) from
    :func:`erlang_b` (equivalent to the textbook
    C = [A**N/N! * N/(N-A)] / [sum_{k<N} A**k/k! + A**N/N! * N/(N-A)]).
    Returns 1.0 when A >= N (the queue is unstable and every call waits).
    """
    n = _check_agents(agents, minimum=0)
    a = _check_nonneg("offered_load", offered_load)
    if a >= n:
        return 1.0
    if a == 0:
        return 0.0
    b = erlang_b(n, a)
    return min(1.0, n * b / (n - a * (1.0 - b)))


def erlang_c_metrics(
    *,
    arrivals_per_hour: float,
    aht_seconds: float,
    agents: int,
    threshold_seconds: float = 20,
) -> Analytic:
    """Steady-state M/M/N (Erlang C) metrics.

    Standard results (e.g. Gross et al., Fundamentals of Queueing Theory, 2.3):
    the waiting time W of a call satisfies
    P(W > t) = C(N, A) * exp(-(N - A) * t / aht), hence
    service level = 1 - C * exp(-(N - A) * t / aht),
    ASA = E[W] = C * aht / (N - A)  (every call is answered),
    occupancy = A / N.
    Raises ValueError when A >= N: the M/M/N queue has no steady state.
    """
    lam_h = _check_nonneg("arrivals_per_hour", arrivals_per_hour)
    aht = _check_pos("aht_seconds", aht_seconds)
    n = _check_agents(agents, minimum=1)
    t = _check_nonneg("threshold_seconds", threshold_seconds)
    a = lam_h / 3600.0 * aht
    if a >= n:
        raise ValueError(
            f"Erlang C is unstable: offered load {a:.6g} Erlangs >= {n} agents "
            f"(arrivals_per_hour={lam_h:g}, aht_seconds={aht:g}); the queue grows "
            f"without bound. Add agents or use erlang_a_metrics with a patience."
        )
    c = erlang_c(n, a)
    slack = n - a
    return Analytic(
        model="erlang_c",
        offered_load=a,
        agents=n,
        probability_wait=c,
        service_level=1.0 - c * math.exp(-slack * t / aht),
        asa=c * aht / slack,
        abandon_rate=0.0,
        occupancy=a / n,
    )


# ---------------------------------------------------------------------------
# Erlang A (M/M/N+M)


@dataclass(frozen=True, slots=True)
class _ErlangADetail:
    """Everything the Erlang A state sum yields (also used by the tests)."""

    probability_wait: float  # P(arrival finds all N agents busy)
    service_level: float  # P(answered and wait <= t)
    answered: float  # P(answered)
    abandon: float  # P(abandon)
    asa: float  # E[wait | answered]
    mean_queue: float  # E[number waiting]  (time average = arrival average, PASTA)
    states: int  # number of queue states summed


def _erlang_a_detail(lam: float, mu: float, theta: float, n: int, t: float) -> _ErlangADetail:
    """Exact M/M/N+M metrics by summing the birth-death chain over its states.

    Method (documented here because the textbook formulas go through the
    incomplete gamma function, which is awkward without scipy):

    1. Stationary law.  States k = number of calls in the system; birth rate
       lambda, death rate k*mu for k <= N and N*mu + (k-N)*theta above N.
       Relative to pi_N:
         sum_{k<N} pi_k / pi_N = N / (A * B(N-1, A))        (Erlang B, log space)
         w_j := pi_{N+j} / pi_N = prod_{i=1..j} lambda / (N*mu + i*theta)
       (the series of Mandelbaum & Zeltyn's function A(x, y) =
       x e^y y^-x gamma(x, y) with x = N*mu/theta, y = lambda/theta).  The terms
       rise until N*mu + j*theta > lambda and then decay faster than
       geometrically; the sum stops when the bounded tail is < e^-40 relative.
       All terms are kept in log space with an online rescale, so the huge
       values of overloaded centres do not overflow.
    2. An arrival sees state N+j with probability pi_{N+j} (PASTA).  With j
       callers ahead, its *offered* wait V (the wait it would have if it were
       infinitely patient) is a sum of independent exponentials with rates
       r_m = N*mu + m*theta, m = j, j-1, ..., 0 (service completions plus
       abandonments of those still ahead).  Its own patience tau ~ Exp(theta)
       is independent of V, and it is answered iff V <= tau, so for any f
       E[f(V); answered] = E[f(V) e^{-theta V}].  Tilting each exponential by
       e^{-theta x} gives, with V' = sum_{m=1..j+1} Exp(N*mu + m*theta):
         P(answered | j)          = prod r_m / (r_m + theta) = N*mu / (N*mu + (j+1)*theta)
         E[V; answered | j]       = P(answered | j) * sum_{m=1..j+1} 1/(N*mu + m*theta)
         P(answered, V <= t | j)  = P(answered | j) * P(V' <= t).
       V' has rates theta*(x+m), x = N*mu/theta: it is distributed as the
       (j+1)-th order statistic of x+j+1 i.i.d. Exp(theta) clocks (exactly for
       integer x, by analytic continuation otherwise), so with z = 1 - e^{-theta t}
         P(V' > t) = 1 - I_z(j+1, x+1) = sum_{a=0..j} NB_a,
       NB_a = C(a+x, a) z^a (1-z)^(x+1) the negative binomial pmf, accumulated
       by the ratio NB_{a+1}/NB_a = z (a+x+1)/(a+1) in log space.
    3. P(Ab) = sum_j pi_{N+j} (1 - P(answered | j)), a sum of positive terms
       (no cancellation); it agrees with Mandelbaum & Zeltyn's closed form and
       with Little's law P(Ab) = theta * E[queue] / lambda.
    """
    nmu = n * mu
    a = lam / mu
    # log of the mass below N relative to pi_N: log(N / A) + log(1 / B(N-1, A)).
    log_low = math.log(n) - math.log(a) + _log_inv_erlang_b(n - 1, a)

    z = -math.expm1(-theta * t)  # P(Exp(theta) <= t)
    use_t = z > 0  # t == 0 (or so tiny that z underflows): P(V' > t) = 1
    if use_t:
        log_z = math.log(z)
        x1 = nmu / theta + 1.0  # x + 1, the negative binomial "size"
        log_nb = -(nmu + theta) * t  # log NB_0 = (x+1) log(1-z)
    cum_nb = 0.0

    # Running sums, all scaled by exp(-scale): sums of w_j * f_j.
    scale = log_low
    low = 1.0  # sum_{k<N} pi_k / pi_N, scaled
    s_queue = 0.0  # sum w_j                              -> P(wait > 0)
    s_ab = 0.0  # sum w_j (1 - p_answer_j)                -> P(Ab)
    s_ans = 0.0  # sum w_j p_answer_j                     -> P(answered, waited)
    s_sl = 0.0  # sum w_j p_answer_j P(V' <= t)           -> P(answered, 0 < V <= t)
    s_wait = 0.0  # sum w_j p_answer_j * sum 1/r_m        -> E[V; answered]
    s_len = 0.0  # sum w_j j                              -> E[queue length]

    log_w = 0.0  # log w_0 = log(pi_N / pi_N)
    inv_rates = 0.0
    log_lam = math.log(lam)
    j = 0
    while True:
        if log_w > scale:  # online rescale keeps every scaled term <= 1
            f = math.exp(scale - log_w)
            low *= f
            s_queue *= f
            s_ab *= f
            s_ans *= f
            s_sl *= f
            s_wait *= f
            s_len *= f
            scale = log_w
        w = math.exp(log_w - scale)
        r_next = nmu + (j + 1) * theta
        p_answer = nmu / r_next
        inv_rates += 1.0 / r_next
        if use_t:
            cum_nb += math.exp(log_nb)
            p_in_time = max(0.0, 1.0 - cum_nb)
            log_nb += log_z + math.log((j + x1) / (j + 1))
        else:
            p_in_time = 0.0
        s_queue += w
        s_ab += w * ((j + 1) * theta / r_next)
        s_ans += w * p_answer
        s_sl += w * p_answer * p_in_time
        s_wait += w * p_answer * inv_rates
        s_len += w * j

        # Next term: w_{j+1} = w_j * lambda / (N*mu + (j+1)*theta).
        q = lam / r_next
        log_w += log_lam - math.log(r_next)
        j += 1
        if q < 1.0:
            # Past the mode the ratios keep shrinking, so the tail from j on is
            # below w_j * sum_k q^k (j + 1 + k) <= w_j (j + 2) / (1 - q)^2.
            tail = log_w - scale + math.log(j + 2) - 2.0 * math.log1p(-q)
            if tail < math.log(low + s_queue) - _TAIL_LOG:
                break
        if j >= _MAX_QUEUE_STATES:
            raise ValueError(
                "Erlang A: the queue distribution is too wide to sum "
                f"(lambda={lam:g}/s, N*mu={nmu:g}/s, theta={theta:g}/s); "
                "the patience is too long for this overload"
            )

    total = low + s_queue
    return _ErlangADetail(
        probability_wait=s_queue / total,
        service_level=(low + s_sl) / total,
        answered=(low + s_ans) / total,
        abandon=s_ab / total,
        asa=s_wait / (low + s_ans),
        mean_queue=s_len / total,
        states=j,
    )


def erlang_a_metrics(
    *,
    arrivals_per_hour: float,
    aht_seconds: float,
    agents: int,
    patience_seconds: float,
    threshold_seconds: float = 20,
) -> Analytic:
    """Steady-state M/M/N+M (Erlang A / Palm) metrics, exponential patience.

    Mandelbaum & Zeltyn, "The Palm/Erlang-A Queue, with Applications to Call
    Centers" (2004/2007).  Stable for every load, including A >= N.

    * probability_wait = P(an arrival finds all agents busy)
    * service_level = P(answered and wait <= threshold), over all offered calls
    * asa = E[wait | answered]
    * abandon_rate = P(Ab)
    * occupancy = lambda * (1 - P(Ab)) * aht / N

    Computed exactly by summing the birth-death chain state by state, with the
    conditional waiting-time law given the arrival state (see
    ``_erlang_a_detail`` for the derivation).  Truncation error < 1e-15.
    """
    lam_h = _check_nonneg("arrivals_per_hour", arrivals_per_hour)
    aht = _check_pos("aht_seconds", aht_seconds)
    n = _check_agents(agents, minimum=1)
    patience = _check_pos("patience_seconds", patience_seconds)
    t = _check_nonneg("threshold_seconds", threshold_seconds)
    lam = lam_h / 3600.0
    a = lam * aht
    if lam == 0:
        return Analytic("erlang_a", 0.0, n, 0.0, 1.0, 0.0, 0.0, 0.0)
    d = _erlang_a_detail(lam, 1.0 / aht, 1.0 / patience, n, t)
    return Analytic(
        model="erlang_a",
        offered_load=a,
        agents=n,
        probability_wait=d.probability_wait,
        service_level=d.service_level,
        asa=d.asa,
        abandon_rate=d.abandon,
        occupancy=min(1.0, a * (1.0 - d.abandon) / n),
    )


# ---------------------------------------------------------------------------
# staffing


def _min_feasible(ok, lo: int, start: int, max_n: int) -> int | None:
    """Smallest n in [lo, max_n] with ok(n), for a predicate monotone in n.

    Probing begins at ``start`` and gallops (steps 1, 2, 4, ...) down or up
    from it before bisecting, so a good starting guess costs few evaluations.
    Returns None when ok(max_n) is false.
    """
    start = min(max(start, lo), max_n)
    if ok(start):
        good, step = start, 1
        while True:  # gallop down to a failing size
            if good == lo:
                return lo
            cand = max(lo, good - step)
            if not ok(cand):
                bad = cand
                break
            good, step = cand, step * 2
    else:
        bad, step = start, 1
        while True:  # gallop up to a feasible size
            if bad == max_n:
                return None
            cand = min(max_n, bad + step)
            if ok(cand):
                good = cand
                break
            bad, step = cand, step * 2
    while good - bad > 1:  # invariant: ok(good), not ok(bad)
        mid = (bad + good) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


def staffing(
    *,
    arrivals_per_hour: float,
    aht_seconds: float,
    target_service_level: float,
    threshold_seconds: float,
    patience_seconds: float | None = None,
    max_abandon_rate: float | None = None,
    max_agents: int = 10000,
) -> int:
    """Fewest agents N with service_level >= target (and P(Ab) <= max_abandon_rate).

    Erlang C when ``patience_seconds`` is None (searching from floor(A) + 1, the
    smallest stable size), Erlang A otherwise (``max_abandon_rate`` only
    matters there: Erlang C never abandons).  The service level is
    non-decreasing and the abandonment rate non-increasing in N, so the answer
    is found by galloping then bisection.  For Erlang A the search starts from
    the Erlang C answer (usually within a few agents of it, and cheap to
    evaluate) and never goes below the necessary bound
    N >= A * max(target, 1 - max_abandon_rate), which follows from
    SL <= 1 - P(Ab) <= N / A (carried load cannot exceed N).
    Raises ValueError if the target is not reachable with ``max_agents``.
    """
    lam_h = _check_nonneg("arrivals_per_hour", arrivals_per_hour)
    aht = _check_pos("aht_seconds", aht_seconds)
    t = _check_nonneg("threshold_seconds", threshold_seconds)
    target = float(target_service_level)
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target_service_level must be in [0, 1], got {target!r}")
    if max_abandon_rate is not None and not 0.0 <= max_abandon_rate <= 1.0:
        raise ValueError(f"max_abandon_rate must be in [0, 1], got {max_abandon_rate!r}")
    max_n = _check_agents(max_agents, minimum=1)
    a = lam_h / 3600.0 * aht

    def ok_c(n: int) -> bool:
        m = erlang_c_metrics(
            arrivals_per_hour=lam_h, aht_seconds=aht, agents=n, threshold_seconds=t
        )
        return m.service_level >= target

    lo_c = max(1, math.floor(a) + 1)
    n_c = _min_feasible(ok_c, lo_c, lo_c, max_n) if lo_c <= max_n else None

    if patience_seconds is None:
        result = n_c
    else:
        patience = _check_pos("patience_seconds", patience_seconds)

        def ok_a(n: int) -> bool:
            m = erlang_a_metrics(
                arrivals_per_hour=lam_h,
                aht_seconds=aht,
                agents=n,
                patience_seconds=patience,
                threshold_seconds=t,
            )
            if max_abandon_rate is not None and m.abandon_rate > max_abandon_rate:
                return False
            return m.service_level >= target

        need = max(target, 0.0 if max_abandon_rate is None else 1.0 - max_abandon_rate)
        lo_a = max(1, math.ceil(a * need) - 1)  # minus one: float rounding slack
        if lo_a > max_n:
            result = None
        else:
            result = _min_feasible(ok_a, lo_a, lo_c if n_c is None else n_c, max_n)

    if result is None:
        raise ValueError(
            f"target not reachable with max_agents={max_n} "
            f"(offered load {a:.6g} Erlangs, target SL {target:g} within {t:g}s"
            + (f", max abandon {max_abandon_rate:g}" if max_abandon_rate is not None else "")
            + ")"
        )
    return result
