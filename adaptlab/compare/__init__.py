"""The comparison grid: every strategy x train size x seed on the user's data, measured side by
side; a results store that resumes; a report; and a recommendation with reasons.

``adaptlab.compare`` is both this package and the API call :func:`adaptlab.compare.session.compare`: importing a
sub-package sets it as an attribute of its parent, which would hide a function of the same name
once anything imported ``adaptlab.compare.*``; so the package itself is callable (its module class
gets a ``__call__``) and ``adaptlab.compare(data, out=...)`` always runs a compare.
"""

import sys
import types

from adaptlab.compare.config import CompareConfig, parse_budget
from adaptlab.compare.grid import plan, run_compare
from adaptlab.compare.store import RunSpec, load_results

__all__ = ["CompareConfig", "RunSpec", "load_results", "parse_budget", "plan", "run_compare"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from adaptlab.compare.session import compare

        return compare(*args, **kwargs)

    __call__.__doc__ = (
        "adaptlab.compare(data, out=..., budget=..., **settings): see :func:`adaptlab.compare.session.compare`."
    )


sys.modules[__name__].__class__ = _CallablePackage
