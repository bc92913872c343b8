"""Task types: one module each, registered by name (``TASK_TYPES``). See ``base.py`` for what a type holds."""

from minibert.tasks.base import TASK_TYPES, Task, check_options, make_task, register, task_type
from minibert.tasks.classification import Classification
from minibert.tasks.cross_sts import CrossSTS
from minibert.tasks.masked_lm import MaskedLM
from minibert.tasks.nli import NLI
from minibert.tasks.pairs import Pairs
from minibert.tasks.sts import STS
from minibert.tasks.token_classification import TokenClassification

__all__ = ["NLI", "STS", "TASK_TYPES", "Classification", "CrossSTS", "MaskedLM", "Pairs", "Task", "TokenClassification",
           "check_options", "make_task", "register", "task_type"]
