from .necks import *  # noqa: F401,F403
from .reid import *  # noqa: F401,F403
