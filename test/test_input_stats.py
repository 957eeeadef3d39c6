"""occ_ros.input_stats: loss, duplicates, reordering, pauses and resets from header stamps."""

from occ_ros.input_stats import StampTracker, StampVerdict

MS = 1_000_000


def test_every_third_message_lost_is_counted():
    tr = StampTracker()
    sent = [i * 100 * MS for i in range(61)]  # 10 Hz; the last one arrives (a trailing loss is unknowable)
    for i, t in enumerate(sent):
        if i % 3 != 2 or i < 4:  # drop every third once the period is known
            assert tr.observe(t) is StampVerdict.ACCEPT
    c = tr.counts()
    dropped = sum(1 for i in range(4, 61) if i % 3 == 2)
    assert c.lost == dropped == 19 and c.expected == 61 and c.received == 61 - dropped
    assert abs(c.period_s - 0.1) < 1e-9
    assert abs(c.loss_fraction - dropped / 61) < 1e-9


def test_duplicates_and_backwards_stamps_are_dropped_not_lost():
    tr = StampTracker()
    for t in (0, 100, 200, 300):
        tr.observe(t * MS)
    assert tr.observe(300 * MS) is StampVerdict.OUT_OF_ORDER  # duplicate
    assert tr.observe(250 * MS) is StampVerdict.OUT_OF_ORDER  # backwards
    assert tr.observe(400 * MS) is StampVerdict.ACCEPT
    c = tr.counts()
    assert (c.received, c.out_of_order, c.lost, c.expected) == (7, 2, 0, 5)


def test_pauses_and_resets_are_not_loss():
    tr = StampTracker(pause_s=2.0)
    for t in range(5):
        tr.observe(t * 100 * MS)
    assert tr.observe(3600 * 10**9) is StampVerdict.ACCEPT  # an hour later: next scene of a bag
    assert tr.observe(100 * MS) is StampVerdict.RESET  # the bag played again
    assert tr.observe(200 * MS) is StampVerdict.ACCEPT
    c = tr.counts()
    assert (c.lost, c.pauses, c.resets, c.out_of_order) == (0, 1, 1, 0)


def test_unreadable_messages_fill_their_gap():
    tr = StampTracker()
    for t in range(5):
        tr.observe(t * 100 * MS)
    tr.received_unstamped()  # message 5 arrived truncated: its stamp is unknown
    tr.observe(600 * MS)
    c = tr.counts()
    assert (c.received, c.malformed, c.lost, c.expected) == (7, 1, 0, 7)
    since = c.minus(tr.counts())
    assert since.received == 0 and since.lost == 0


def test_the_middlewares_loss_count_is_a_second_opinion():
    """A loss before the period is known is invisible in the stamps; rmw's message_lost count sees it."""
    tr = StampTracker()
    tr.observe(0)
    tr.transport_lost(1)  # message 1 lost in transport, reported by the middleware
    for t in (200, 300, 400):
        tr.observe(t * MS)
    c = tr.counts()
    assert (c.lost, c.transport_lost) == (0, 1)
    assert abs(c.loss_fraction - 1 / 4) < 1e-9
