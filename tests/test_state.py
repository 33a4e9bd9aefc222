"""The state database's guarantees that do not need a server."""

from poold.state import State


def test_a_track_with_an_open_request_is_not_queued_twice(tmp_path):
    """Two planners (the daemon and a manual audit) may plan the same track: one wins."""
    with State(tmp_path) as first, State(tmp_path) as second:
        incident = first.record_problem(5, "a.mp3", "missing", "missing", "gone")
        other = second.record_problem(6, "b.mp3", "missing", "missing", "gone")
        assert first.enqueue("batch-1", "missing", "reason", [incident]) is not None
        assert second.enqueue("batch-2", "missing", "reason", [other, incident]) is None
        assert [r.trackids for r in second.requests(states=("pending",))] == [(5,)]
        request = first.pending_requests()[0]
        first.mark_sent(request.id)
        first.settle(request.id, "accepted", tracks_requeued=1)
        assert second.enqueue("batch-3", "missing", "reason", [other, incident]) is not None


def test_settling_keeps_the_last_error_of_a_retried_request(tmp_path):
    with State(tmp_path) as state:
        incident = state.record_problem(5, "a.mp3", "missing", "missing", "gone")
        request_id = state.enqueue("b", "missing", "reason", [incident])
        state.mark_sent(request_id)
        state.settle(request_id, "pending", error="HTTP 503")
        state.mark_sent(request_id)
        state.settle(request_id, "accepted", tracks_requeued=1)
        request = state.requests()[0]
        assert (request.state, request.attempts, request.last_error) == ("accepted", 2, "HTTP 503")


def test_incidents_open_refresh_and_resolve(tmp_path):
    with State(tmp_path) as state:
        first = state.record_problem(5, "a.mp3", "corrupt", "truncated", "cut", now=100.0)
        again = state.record_problem(5, "a.mp3", "corrupt", "zero_filled", "zeros", now=200.0)
        assert again.id == first.id and (again.first_seen, again.last_seen, again.reason) == (100.0, 200.0, "zero_filled")
        assert state.resolve([5, 6], now=300.0) == 1
        assert state.open_incident(5) is None
        assert state.record_problem(5, "a.mp3", "missing", "missing", "gone").id != first.id
