"""Logging set-up shared by every entry point: INFO lines only, or also debug lines and third-party
notices with ``-v``/``--verbose``.

Entry points call ``set_up_logging()`` before they import fairseq: some fairseq modules configure the
root logger when imported (text_to_speech at INFO, wav2vec2_classification at DEBUG, which lets
matplotlib's font scan through) unless it is configured already, and text_to_speech then logs a
tensorboardX notice. ``main`` calls it again with the parsed ``--verbose``. Only the standard library
is imported here, so this module can come first.
"""
import logging
import sys
import warnings

FAIRSEQ_FORMAT = "%(asctime)s | %(levelname)s | %(name)s | %(message)s"
MESSAGE_ONLY = "%(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
VERBOSE_FLAGS = ("-v", "--verbose")
# loggers whose INFO lines are notices about optional packages nothing here uses, or data loader internals
NOTICE_LOGGERS = ("fairseq.tasks.text_to_speech", "fairseq.tasks.fairseq_task")
# warnings about settings that are right on a GPU machine and merely idle on this one
IDLE_SETTING_WARNINGS = ("'pin_memory' argument is set as true but no accelerator",)
# PyTorch's notice that fairseq 0.12 calls a deprecated API in every training step: nothing here can change it
LIBRARY_DEPRECATIONS = (r"`torch\.cuda\.amp\.autocast\(args\.\.\.\)` is deprecated",)


def add_verbose_flag(parser):
    parser.add_argument(*VERBOSE_FLAGS, action="store_true",
                        help="also show debug lines and notices of the libraries underneath")


def verbose_in(argv):
    return any(arg in VERBOSE_FLAGS for arg in argv)


def set_up_logging(verbose=None, fmt=FAIRSEQ_FORMAT, stream=None):
    """Log to ``stream`` (stderr by default) at INFO, or DEBUG when verbose; ``verbose=None`` looks for
    -v/--verbose on the command line (before the arguments are parsed)."""
    if verbose is None:
        verbose = verbose_in(sys.argv[1:])
    logging.basicConfig(format=fmt, datefmt=DATE_FORMAT, level=logging.DEBUG if verbose else logging.INFO,
                        stream=stream, force=True)
    for name in NOTICE_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    for message in IDLE_SETTING_WARNINGS + LIBRARY_DEPRECATIONS:
        warnings.filterwarnings("default" if verbose else "ignore", message=message)
