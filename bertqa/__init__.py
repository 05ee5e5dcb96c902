"""bertqa: extractive question answering with BERT, Linear layers as int8 custom nodes."""
from bertqa.api import QAModel, load
from bertqa.errors import BertQAError
from bertqa.qa.decode import Answer
from bertqa.qa.pipeline import QAOptions

__version__ = "0.1.0"
__all__ = ["load", "QAModel", "Answer", "QAOptions", "BertQAError", "__version__"]
