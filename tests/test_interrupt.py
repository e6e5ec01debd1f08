import os
import signal

from stylegan_t2i.training.interrupt import GracefulInterrupt


def test_sigterm_sets_flag_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with GracefulInterrupt() as interrupt:
        assert not interrupt.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupt.requested and interrupt.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before
