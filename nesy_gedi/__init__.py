"""nesy-gedi: neuro-symbolic learning with exact circuits and GEDI self-supervision.

The small public API, one stage of the data's path each:

    knowledge = load_knowledge("logic/addition.logic", {"N": 2})   # parse + ground
    compiled = compile_file("logic/addition.logic", {"N": 2})      # PySDD, cached on disk
    circuit = KnowledgeCircuit(compiled)                           # KLay torch layer
    loss = semantic_loss(circuit(concept_log_probs, labels))       # -log P(K and labels)
    config, circuit, splits, perception, device = load_run("runs/mnist_addition")  # a train run, read back

docs/api.md describes each of them.
"""
from .circuit import KnowledgeCircuit
from .compiler import CompiledKnowledge, compile_file
from .config.load import load_config
from .config.schema import TaskConfig
from .errors import ConfigError, DataError, LogicError, NesyError
from .evaluate import load_run
from .logic.ground import Knowledge, load_knowledge
from .objectives.semantic import semantic_loss

__version__ = "0.1.0"

__all__ = [
    "CompiledKnowledge",
    "ConfigError",
    "DataError",
    "Knowledge",
    "KnowledgeCircuit",
    "LogicError",
    "NesyError",
    "TaskConfig",
    "compile_file",
    "load_config",
    "load_knowledge",
    "load_run",
    "semantic_loss",
]
