"""kbn: k-layer networks with batch normalization on CIFAR-10, in NumPy.

Where things are:
    kbn.data       load_cifar10: find / download / verify / normalise CIFAR-10
    kbn.layers     affine, ReLU, batch norm and softmax forward/backward pairs
    kbn.network    Network: parameters, BN moving averages, cost and gradients
    kbn.gradcheck  numerical gradients and relative errors
    kbn.schedule   cyclical_lr(t): the triangular learning rate
    kbn.trainer    fit(): the one training loop, returning a Result with its history
    kbn.search     lambda_search(): coarse-to-fine random search of the L2 weight
    kbn.config     NetworkConfig, TrainConfig, SearchConfig (frozen, validated)
    kbn.runs       TrialSpec, DataSpec, run_trials(): many trainings, in parallel, cached
    kbn.executors  serial, process-pool and Dask executors behind one interface
    kbn.cache      ResultCache: finished trainings on disk, keyed by their full config
    kbn.checkpoint save_network / load_network: trained models as .npz
    kbn.experiments  the four experiments of the report; kbn.plots  their figures
    kbn.book       what `jupyter-book build book/` runs first: the out-of-date chapters
    kbn.report     its front end (make report, kbn report)
    kbn.cli        the `kbn` command
"""

__version__ = "0.1.0"

from .config import NetworkConfig, SearchConfig, TrainConfig
from .data import CIFAR10, Split, load_cifar10
from .errors import DataError
from .gradcheck import check_gradients, numerical_gradients, relative_errors
from .network import Network, init_params
from .schedule import cyclical_lr
from .search import SearchResult, lambda_search
from .trainer import Result, fit
from .cache import ResultCache
from .checkpoint import load_network, save_network
from .executors import get_executor
from .runs import DataSpec, TrialSpec, run_trials

__all__ = [
    "CIFAR10", "DataError", "Network", "NetworkConfig", "Result", "SearchConfig",
    "SearchResult", "Split", "TrainConfig", "check_gradients", "cyclical_lr", "fit",
    "init_params", "lambda_search", "load_cifar10", "numerical_gradients",
    "relative_errors", "ResultCache", "load_network", "save_network", "get_executor",
    "DataSpec", "TrialSpec", "run_trials",
]
