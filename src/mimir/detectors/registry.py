"""Every method by name: the MIMIR detector, the prototype's Lasso, and the baselines."""

from mimir.detectors.baselines import BASELINES
from mimir.detectors.models import DETECTORS

METHODS = {**DETECTORS, **BASELINES}
