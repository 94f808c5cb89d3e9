"""`vitlab demo`'s study: enough seeds for its first report to bound a mean."""
from vitlab import stats
from vitlab.demo import DEMO_SPEC
from vitlab.study.plan import expand


def test_the_demo_runs_enough_seeds_to_bound_a_mean():
    runs = expand(str(DEMO_SPEC))
    seeds = {r.seed for r in runs}
    assert len(seeds) >= stats.MIN_SEEDS_TO_BOUND
    assert all(r.config.data.name == "synthetic" for r in runs)  # no download, CPU-sized
