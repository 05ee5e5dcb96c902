"""bertqa: extractive question answering with BERT, Linear layers as int8 custom nodes."""
from bertqa.api import QAModel, load
from bertqa.errors import BertQAError
from bertqa.qa.decode import Answer

__version__ = "0.1.0"
__all__ = ["load", "QAModel", "Answer", "BertQAError", "__version__"]
