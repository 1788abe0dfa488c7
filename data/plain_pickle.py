"""Pickles of plain data (OFA's ans2label.pkl, RefCOCO's refs(unc).p) read without running their code."""
import pickle

from data.errors import BadInputError


class PlainDataUnpickler(pickle.Unpickler):
    """Reads containers, strings and numbers only: a pickle naming any class or function is refused
    before anything in it is called."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it names {module}.{name}; only plain data (containers, strings, "
                                     "numbers) is read, nothing in a pickle is run")


def load_plain_pickle(path):
    """The plain data in a pickle file. Python 2 strings (RefCOCO's pickles) are read as UTF-8."""
    with open(path, "rb") as f:
        try:
            return PlainDataUnpickler(f, encoding="utf-8").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            raise BadInputError(path, 1, 1, f"not a readable pickle of plain data: {error}") from None
