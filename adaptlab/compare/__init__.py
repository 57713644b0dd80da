"""The comparison grid: every strategy x train size x seed on the user's data, measured side by
side; a results store that resumes; a report; and a recommendation with reasons."""

from adaptlab.compare.config import CompareConfig, parse_budget
from adaptlab.compare.grid import plan, run_compare
from adaptlab.compare.store import RunSpec, load_results

__all__ = ["CompareConfig", "RunSpec", "load_results", "parse_budget", "plan", "run_compare"]
