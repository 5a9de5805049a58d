"""The pacing policy as plain logic: windows, paces, pauses and budgets, on a made-up clock."""

from __future__ import annotations

import pytest

from fanfold.scheduling.pacing import PaceLimits, PaceState

ADAPTIVE = PaceLimits(max_concurrency=8)
UNBOUNDED = PaceLimits()


def steady_successes(
    state: PaceState, rate: float, seconds: float, start: float = 0.0, limits: PaceLimits = ADAPTIVE
) -> float:
    """Successes at `rate` per second for `seconds`; returns the time after."""
    now = start
    for _ in range(int(rate * seconds)):
        now += 1 / rate
        state.on_success(now, limits)
    return now


def run_window(state: PaceState, limits: PaceLimits, hidden: int, round_trips: int) -> list[int]:
    """Whole round trips against a hidden concurrency limit: the window fills each time.

    Calls beyond `hidden` are answered 429 at once (with the calls before them in flight);
    the others succeed at the end of the round trip. Returns the 429s of each round trip.
    """
    now, rejected = 0.0, []
    for _ in range(round_trips):
        cap = state.cap(limits) or 0
        permits = [state.reserve(now, 0, limits)[0] for _ in range(cap)]
        bad = 0
        for i, seq in enumerate(permits):
            if i >= hidden:
                bad += 1
                state.on_rate_limited(now + 0.001, limits, in_flight=hidden, seq=seq)
        for i in range(min(cap, hidden)):
            state.on_success(now + 0.2, limits, in_flight=i, latency=0.2)
        rejected.append(bad)
        now += 0.2
    return rejected


def test_a_rate_429_sets_the_pace_just_under_the_measured_success_rate() -> None:
    state = PaceState.fresh(0.0, ADAPTIVE)
    now = steady_successes(state, rate=40, seconds=3)
    assert state.measured(now, ADAPTIVE) == pytest.approx(40, rel=0.05)
    assert state.on_rate_limited(now, ADAPTIVE) == "rate"
    assert state.rate == pytest.approx(40 * ADAPTIVE.decrease, rel=0.05)


def test_a_burst_of_rate_429s_decreases_the_pace_once() -> None:
    state = PaceState.fresh(0.0, ADAPTIVE)
    now = steady_successes(state, rate=40, seconds=3)
    assert state.on_rate_limited(now, ADAPTIVE) == "rate"
    after_first = state.rate
    assert state.on_rate_limited(now + 0.1, ADAPTIVE) == "ignored"
    assert state.on_rate_limited(now + 0.4, ADAPTIVE) == "ignored"
    assert state.rate == after_first
    assert state.rate_limited == 3
    assert state.on_rate_limited(now + 0.6, ADAPTIVE) == "rate"  # a new burst
    assert state.rate is not None and after_first is not None and state.rate < after_first


def test_successes_probe_the_pace_up_to_the_stated_limit() -> None:
    limits = PaceLimits(requests_per_second=12.0)
    state = PaceState.fresh(0.0, limits)
    state.rate = 10.0
    for _ in range(50):
        state.on_success(1.0, limits)
    assert state.rate == pytest.approx(11.0)
    for _ in range(500):
        state.on_success(2.0, limits)
    assert state.effective_rate(limits) == 12.0


def test_reservations_keep_to_the_pace_and_the_token_budget() -> None:
    limits = PaceLimits(requests_per_second=10.0, tokens_per_minute=600.0)
    state = PaceState.fresh(100.0, limits)
    assert state.reserve(100.0, 0, limits) == (1, 0.0)
    assert state.reserve(100.0, 0, limits)[1] == pytest.approx(0.1)
    assert state.reserve(100.0, 0, limits)[1] == pytest.approx(0.2)
    # 600 tokens were there; 605 more leave 5 owed, which take 0.5 s at 10 a second.
    assert state.reserve(100.0, 605, limits)[1] == pytest.approx(0.5)


def test_a_pace_that_rises_replans_the_next_start_at_once() -> None:
    """Nothing is booked at the slow pace: the next start follows the pace in effect."""
    limits = PaceLimits()
    state = PaceState.fresh(0.0, limits)
    state.rate = 0.5  # one start every 2 s
    state.reserve(0.0, 0, limits)
    assert state.start_delay(0.1, 0, limits) == pytest.approx(1.9)
    state.rate = 20.0  # learned since
    assert state.start_delay(0.1, 0, limits) == 0.0


def cold_starts(state: PaceState, count: int, limits: PaceLimits = UNBOUNDED) -> list[float]:
    """Start `count` calls, each as soon as the policy lets it: their start times."""
    now, times = 0.0, []
    for _ in range(count):
        now += state.start_delay(now, 0, limits)
        state.reserve(now, 0, limits)
        times.append(now)
    return times


def test_before_any_answer_the_calls_in_flight_double_every_cold_doubling() -> None:
    state = PaceState.fresh(0.0, UNBOUNDED)
    times = cold_starts(state, 32)
    burst, doubling = UNBOUNDED.cold_burst, UNBOUNDED.cold_doubling
    assert times[:burst] == [0.0] * burst  # the burst goes at once
    # The next `burst` calls go at least cold_first_gaps apart: a fast 429 stops the ramp.
    assert times[2 * burst - 1] == pytest.approx(burst * UNBOUNDED.cold_first_gaps)
    for n in (16, 32):  # from there, the calls started double every cold_doubling
        assert times[n - 1] - times[n // 2 - 1] == pytest.approx(doubling)
    gaps = [b - a for a, b in zip(times[burst - 1 :], times[burst:], strict=False)]
    assert all(later <= earlier + 1e-9 for earlier, later in zip(gaps, gaps[1:], strict=False))
    assert state.cap(UNBOUNDED) == UNBOUNDED.cold_window


def test_a_fast_429_in_the_cold_ramp_stops_it_at_the_limit() -> None:
    """A hidden limit of 4: call 5 is answered 429 before call 6 is due, so only one call
    meets the limit, and the rest wait for the window of 4."""
    state = PaceState.fresh(0.0, UNBOUNDED)
    times = cold_starts(state, 5)
    assert state.start_delay(times[-1], 0, UNBOUNDED) >= 0.1  # call 6 is not due yet
    verdict = state.on_rate_limited(times[-1] + 0.01, UNBOUNDED, in_flight=4, seq=5)
    assert verdict == "window" and state.cap(UNBOUNDED) == 4
    assert state.booking_horizon(0.5, UNBOUNDED) == 0.5  # the ramp is over
    assert state.rate is None and state.paused_until == 0.0


def test_a_429_seen_120_ms_after_its_call_started_still_stops_the_cold_ramp() -> None:
    """Three fresh processes ramping one shared window against a limit of 4 at 500 ms:
    call 5's 429 was recorded 105 to 120 ms after its start (first requests go out
    slowly), so call 6 must not be due before then, or it meets the limit too."""
    state = PaceState.fresh(0.0, UNBOUNDED)
    times = cold_starts(state, 5)
    assert state.start_delay(times[-1] + 0.12, 0, UNBOUNDED) > 0  # call 6 is not due yet
    assert state.on_rate_limited(times[-1] + 0.12, UNBOUNDED, in_flight=4, seq=5) == "window"
    assert state.cap(UNBOUNDED) == 4


def test_the_first_success_ends_the_ramp_at_the_calls_started() -> None:
    """No limit met before the first reply: the window is what the ramp reached."""
    state = PaceState.fresh(0.0, UNBOUNDED)
    cold_starts(state, 20)
    assert state.booking_horizon(0.5, UNBOUNDED) == 0.0  # a shared store books nothing ahead
    assert state.pace_room(1.0, 0.5, UNBOUNDED) == 1
    state.on_success(1.0, UNBOUNDED, in_flight=0, latency=0.5)
    assert state.cap(UNBOUNDED) == 20
    assert state.pace_room(1.0, 0.5, UNBOUNDED) is None  # no pace: only the window holds
    assert state.start_delay(1.0, 0, UNBOUNDED) == 0.0


def test_a_stated_cap_has_no_cold_ramp() -> None:
    state = PaceState.fresh(0.0, ADAPTIVE)
    assert cold_starts(state, 8, ADAPTIVE) == [0.0] * 8


def test_slow_start_doubles_the_window_each_round_trip_while_it_is_used() -> None:
    state = PaceState.fresh(0.0, UNBOUNDED)
    window = UNBOUNDED.initial_window
    cold_starts(state, window)
    for _ in range(window):  # a round trip of a full window: each call started as one ended
        state.on_success(1.0, UNBOUNDED, in_flight=window - 1)
    assert state.cap(UNBOUNDED) == 2 * UNBOUNDED.initial_window
    for _ in range(window):  # one call at a time: the window is not used, so it does not grow
        state.on_success(2.0, UNBOUNDED, in_flight=0)
    assert state.cap(UNBOUNDED) == 2 * UNBOUNDED.initial_window
    assert state.cap(PaceLimits(max_concurrency=4)) == 4  # a stated cap bounds it


def test_a_429_without_a_hint_cuts_the_window_to_what_the_server_admitted() -> None:
    state = PaceState.fresh(0.0, UNBOUNDED)
    state.window = 32.0
    seqs = [state.reserve(0.0, 0, UNBOUNDED)[0] for _ in range(32)]
    # The 9th call is rejected with 8 in flight; the rest of the wave is old news.
    assert state.on_rate_limited(0.01, UNBOUNDED, in_flight=8, seq=seqs[8]) == "window"
    assert state.cap(UNBOUNDED) == 8
    for seq in seqs[9:]:
        assert state.on_rate_limited(0.02, UNBOUNDED, in_flight=9, seq=seq) == "ignored"
    assert state.cap(UNBOUNDED) == 8
    assert state.rate is None  # the pace was not touched
    assert state.paused_until == 0.0


def test_the_window_grows_back_one_call_per_round_trip() -> None:
    state = PaceState.fresh(0.0, UNBOUNDED)
    state.window, state.ceiling = 4.0, 12.0
    for _ in range(4):  # one round trip of a full window of 4
        state.on_success(1.0, UNBOUNDED, in_flight=3)
    assert state.window == pytest.approx(5.0, abs=0.1)


@pytest.mark.parametrize("hidden", [4, 8, 16])
def test_a_hidden_concurrency_limit_is_found_and_probed_ever_more_rarely(hidden: int) -> None:
    state = PaceState.fresh(0.0, UNBOUNDED)
    rejected = run_window(state, UNBOUNDED, hidden, round_trips=300)
    assert state.cap(UNBOUNDED) in (hidden, hidden + 1)
    served = 300 * hidden
    assert sum(rejected) <= 0.05 * served + UNBOUNDED.initial_window
    assert sum(rejected[100:]) <= 0.01 * 200 * hidden + 2  # probes are rare by now
    assert state.rate is None


def hidden_16_at_half_a_second(state: PaceState, seconds: float, busiest: int) -> float:
    """Successes against a hidden limit of 16 at 0.5 s (32 a second), each started with
    0-15 others in flight; one a second counted `busiest` (calls the server had answered
    but the client had not yet seen). Returns the time after."""
    now = 0.0
    for i in range(int(32 * seconds)):
        now += 1 / 32
        in_flight = busiest if i % 32 == 0 else i % 16
        state.on_success(now, UNBOUNDED, in_flight=in_flight, latency=0.5)
    return now


@pytest.mark.parametrize("busiest", [16, 17, 18])
def test_a_concurrency_429_counted_a_call_or_two_short_cuts_the_window_not_the_pace(
    busiest: int,
) -> None:
    state = PaceState.fresh(0.0, UNBOUNDED)
    state.window = 20.0
    now = hidden_16_at_half_a_second(state, seconds=3, busiest=busiest)
    seq = state.reserve(now, 0, UNBOUNDED)[0]
    assert state.on_rate_limited(now, UNBOUNDED, retry_after=0.5, in_flight=16, seq=seq) == "window"
    assert state.cap(UNBOUNDED) == 16
    assert state.rate is None and state.rate_cuts == 0


def test_a_429_with_the_window_already_full_leaves_the_pace_alone() -> None:
    state = PaceState.fresh(0.0, UNBOUNDED)
    state.window = 20.0
    now = hidden_16_at_half_a_second(state, seconds=3, busiest=16)
    state.on_rate_limited(now, UNBOUNDED, in_flight=16, seq=state.reserve(now, 0, UNBOUNDED)[0])
    assert state.cap(UNBOUNDED) == 16
    # A call granted just after the cut meets the same 16: the window explains it.
    seq = state.reserve(now + 0.02, 0, UNBOUNDED)[0]
    assert state.on_rate_limited(now + 0.04, UNBOUNDED, in_flight=16, seq=seq) == "ignored"
    assert state.rate is None and state.cap(UNBOUNDED) == 16


BURST_OF_8 = PaceLimits(cold_burst=8)


def cold_burst_of_8(state: PaceState) -> list[int]:
    """A cold burst of 8 sent at once against a hidden limit of 4: their sequence numbers."""
    seqs = [state.reserve(0.0, 0, BURST_OF_8)[0] for _ in range(8)]
    assert state.last_start == 0.0
    return seqs


def test_a_burst_whose_first_call_lost_the_race_cuts_the_window_not_the_pace() -> None:
    """Calls 2-5 reached the provider before call 1 (new connections, any order): call 1's
    429 came with nothing in flight before it, but calls 2-8 were still in flight."""
    state = PaceState.fresh(0.0, UNBOUNDED)
    seqs = cold_burst_of_8(state)
    # Call 6 is rejected with calls 1-5 counted in flight (call 1 was never admitted).
    assert state.on_rate_limited(0.01, UNBOUNDED, in_flight=5, seq=seqs[5], overtaken=2) == "window"
    assert state.cap(UNBOUNDED) == 5
    for i in (6, 7):  # the rest of the burst: old news
        assert state.on_rate_limited(0.01, UNBOUNDED, in_flight=5, seq=seqs[i]) == "ignored"
    # Call 1's 429, with a retry-after, and calls 2-5 still in flight.
    verdict = state.on_rate_limited(
        0.012, UNBOUNDED, retry_after=0.25, in_flight=0, seq=seqs[0], overtaken=4
    )
    assert verdict == "window"  # the same burst shows a lower level: 4
    assert state.cap(UNBOUNDED) == 4
    assert state.rate is None and state.rate_cuts == 0
    assert state.paused_until == 0.0  # nothing paused every start for its hint


def test_a_burst_whose_last_call_came_back_first_is_cut_to_the_lowest_level() -> None:
    """Call 1's 429 came back first: calls 2-8 still in flight bound the window at 7;
    the later 429s of the same burst lower it to what the provider admitted."""
    state = PaceState.fresh(0.0, UNBOUNDED)
    seqs = cold_burst_of_8(state)
    verdict = state.on_rate_limited(
        0.01, UNBOUNDED, retry_after=0.25, in_flight=0, seq=seqs[0], overtaken=7
    )
    assert verdict == "window"
    assert state.cap(UNBOUNDED) == 7
    # Calls 6-8 each counted call 1 among those in flight before them: 4 admitted.
    for i in (5, 6, 7):
        state.on_rate_limited(0.011, UNBOUNDED, retry_after=0.25, in_flight=i - 1, seq=seqs[i])
    assert state.cap(UNBOUNDED) == 4
    assert state.rate is None and state.rate_cuts == 0


def test_a_success_counted_before_a_window_cut_keeps_the_next_429_a_concurrency_one() -> None:
    """Three processes sharing a cold window against a hidden limit of 4 at 50 ms: a call
    of the ramp counted 8 in flight (calls of other processes rejected, or ended and not
    yet released); the window was cut to 7 meanwhile. Its success must not make the next
    429 at 5 in flight look like a rate limit's (the pace would drop to 0.9 x measured)."""
    state = PaceState.fresh(0.0, UNBOUNDED)
    seqs = [state.reserve(0.0, 0, UNBOUNDED)[0] for _ in range(9)]
    for i in range(3):
        state.on_success(0.05, UNBOUNDED, in_flight=i, latency=0.05)
    assert state.on_rate_limited(0.055, UNBOUNDED, in_flight=7, seq=seqs[7]) == "window"
    assert state.cap(UNBOUNDED) == 7
    state.on_success(0.1, UNBOUNDED, in_flight=8, latency=0.05)  # granted before the cut
    seq = state.reserve(0.1, 0, UNBOUNDED)[0]
    assert state.on_rate_limited(0.12, UNBOUNDED, in_flight=5, seq=seq) == "window"
    assert state.cap(UNBOUNDED) == 5
    assert state.rate is None and state.rate_cuts == 0


def test_a_429_with_a_few_calls_started_after_it_is_still_a_rate_429() -> None:
    """Overtaking calls explain a 429 only if, with them, as many were in flight as a
    success had: a rate limit's 429 at a quiet moment still sets the pace."""
    state = PaceState.fresh(0.0, UNBOUNDED)
    now = hidden_16_at_half_a_second(state, seconds=3, busiest=15)
    seq = state.reserve(now, 0, UNBOUNDED)[0]
    verdict = state.on_rate_limited(now, UNBOUNDED, in_flight=5, seq=seq, overtaken=2)
    assert verdict == "rate"
    assert state.window_cuts == 0


def test_a_rate_429_at_a_window_full_of_calls_booked_ahead_slows_the_pace() -> None:
    """A shared limiter books starts ahead at the pace: its calls count many in flight
    that have not started (or have ended). Against a rate limit of 40/s at 50 ms, 2 are
    really in flight: a 429 at a full window is the rate's, not the window's."""
    state = PaceState.fresh(0.0, UNBOUNDED)
    state.window = 20.0
    now = 0.0
    for i in range(120):
        now += 1 / 40
        state.on_success(now, UNBOUNDED, in_flight=10 + i % 10, latency=0.05)
    full = state.cap(UNBOUNDED)
    assert full is not None and full >= 20
    seq = state.reserve(now, 0, UNBOUNDED)[0]
    verdict = state.on_rate_limited(now, UNBOUNDED, retry_after=0.02, in_flight=full, seq=seq)
    assert verdict == "rate"
    assert state.rate == pytest.approx(40 * UNBOUNDED.decrease, rel=0.1)


def test_a_limit_that_rises_is_found_again() -> None:
    state = PaceState.fresh(0.0, UNBOUNDED)
    run_window(state, UNBOUNDED, hidden=4, round_trips=100)
    run_window(state, UNBOUNDED, hidden=10, round_trips=400)
    assert state.cap(UNBOUNDED) is not None and state.cap(UNBOUNDED) >= 9


def test_a_429_explained_by_no_concurrency_slows_the_pace_and_pauses_for_its_hint() -> None:
    state = PaceState.fresh(0.0, UNBOUNDED)
    for i in range(5):  # successes with up to 4 others in flight
        state.on_success(0.0, UNBOUNDED, in_flight=i)
    now = steady_successes(state, rate=40, seconds=3, limits=UNBOUNDED)
    assert state.on_rate_limited(now, UNBOUNDED, retry_after=0.3, in_flight=2, seq=1) == "rate"
    assert state.rate == pytest.approx(40 * UNBOUNDED.decrease, rel=0.15)
    assert state.start_delay(now, 0, UNBOUNDED) == pytest.approx(0.3)
    assert state.window_cuts == 0


def test_a_per_minute_budget_pauses_until_the_minute_without_slowing_the_pace() -> None:
    state = PaceState.fresh(0.0, UNBOUNDED)
    state.rate = 5.0
    verdict = state.on_rate_limited(10.0, UNBOUNDED, retry_after=60, in_flight=0, minute_left=16)
    assert verdict == "budget"
    assert state.start_delay(10.0, 0, UNBOUNDED) == pytest.approx(16.25)
    assert state.rate == 5.0 and state.window == UNBOUNDED.initial_window


def test_a_huge_retry_after_pauses_at_most_max_pause() -> None:
    limits = PaceLimits(max_pause=30.0)
    state = PaceState.fresh(0.0, limits)
    state.on_rate_limited(0.0, limits, retry_after=3600.0)
    assert state.start_delay(0.0, 0, limits) == pytest.approx(30.0)


def test_without_adaptation_429s_are_only_counted() -> None:
    limits = PaceLimits(requests_per_second=5.0, adaptive=False)
    state = PaceState.fresh(0.0, limits)
    assert state.on_rate_limited(0.0, limits, retry_after=5.0, in_flight=3, seq=1) == "ignored"
    assert state.rate_limited == 1
    assert state.cap(limits) is None and state.effective_rate(limits) == 5.0


def test_the_state_round_trips_through_a_row() -> None:
    state = PaceState.fresh(3.0, ADAPTIVE)
    steady_successes(state, rate=10, seconds=1)
    assert PaceState.from_row(state.row()) == state
    assert len(state.row()) == len(PaceState.columns())
