"""What will break the round's rules, known before the first run: the installed LoadGen's seeds,
the minimum duration, performance sample count and query counts LoadGen will use (user.conf over
its embedded mlperf.conf), and the samples the accuracy run will cover. One line per problem,
each naming the rule of the official checker it breaks.
"""
from __future__ import annotations

from common.errors import HarnessError
from mlsubmit.registry import LOADGEN_SCENARIO, Benchmark, get_round


def settings(user_conf: str, model: str, scenario: str):
    """LoadGen's TestSettings for one scenario as the run will read them."""
    import mlperf_loadgen as lg

    s = lg.TestSettings()
    s.scenario = getattr(lg.TestScenario, scenario)
    if s.FromConfig(user_conf, model, scenario) != 0:
        raise HarnessError(f"LoadGen could not parse {user_conf}")
    return s


def problems(bench: Benchmark, scenarios: list[str], user_conf: str, total_samples: int | None) -> list[str]:
    out: list[str] = []
    seeds = get_round(bench.round).seeds
    for scenario in scenarios:
        lg_scenario = LOADGEN_SCENARIO.get(scenario, scenario)
        s = settings(user_conf, bench.loadgen_model(scenario), lg_scenario)
        where = f"{scenario} ({bench.loadgen_model(scenario)} in {user_conf})"
        if scenario == scenarios[0]:
            wrong = [k for k, v in seeds.items() if getattr(s, k) != v]
            if wrong:
                out.append(f"the installed LoadGen's {', '.join(wrong)} are not MLPerf {bench.round}'s "
                           "(seeds_check): install the LoadGen release of that round")
        if s.min_duration_ms < bench.min_duration_ms:
            out.append(f"{where}: min_duration {s.min_duration_ms} ms < {bench.min_duration_ms} ms "
                       "(min_duration_check)")
        pcount = s.performance_sample_count_override
        if pcount and pcount < bench.performance_sample_count:
            out.append(f"{where}: performance_sample_count {pcount} < {bench.performance_sample_count} "
                       "(performance_sample_count_check)")
        if scenario == "Offline" and s.min_query_count < bench.offline_min_samples_per_query:
            # Offline's one query holds min_query_count samples at least (more if the duration asks).
            out.append(f"{where}: min_query_count {s.min_query_count} may give fewer than "
                       f"{bench.offline_min_samples_per_query} samples per query (min_query_count_check)")
        # Server, SingleStream, MultiStream: early stopping stands in for the query count.
        need = bench.min_queries.get(scenario)
        if scenario == "Interactive" and need and s.min_query_count < need:
            out.append(f"{where}: min_query_count {s.min_query_count} < {need} (min_query_count_check)")
    if total_samples is not None and total_samples != bench.dataset.size:
        out.append(f"the accuracy runs cover {total_samples} samples, not the data set's {bench.dataset.size} "
                   "(dataset_check)")
    return out
