"""Ctrl-C while training: deferred to the next batch boundary, never lost, default handling restored after."""

import os
import signal

import pytest

from graft.interrupt import check, deferred_interrupts


def test_ctrl_c_is_raised_at_the_next_check_not_where_it_lands() -> None:
    before = signal.getsignal(signal.SIGINT)
    reached = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        os.kill(os.getpid(), signal.SIGINT)  # would raise right here without the deferral
        reached.append("after the signal")
        check()
        reached.append("after check")
    assert reached == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is before
    check()  # nothing pending any more


def test_ctrl_c_during_the_last_batch_still_stops_the_run() -> None:
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
    with deferred_interrupts():
        pass  # a fresh run starts with nothing pending


def test_a_second_ctrl_c_interrupts_at_once() -> None:
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        pytest.fail("the second Ctrl-C did not interrupt")


def test_a_ctrl_c_before_an_inner_block_is_acted_on_inside_it() -> None:
    """``graft auto`` defers around its whole search and each trainer defers again inside: a Ctrl-C pressed
    between candidates must reach the next trainer's check, not be cleared when that trainer begins."""
    before = signal.getsignal(signal.SIGINT)
    reached = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        os.kill(os.getpid(), signal.SIGINT)  # between candidates
        with deferred_interrupts():  # a trainer starts
            reached.append("inner block entered")
            check()
            reached.append("after check")
    assert reached == ["inner block entered"]
    assert signal.getsignal(signal.SIGINT) is before
