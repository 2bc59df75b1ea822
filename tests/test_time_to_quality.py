"""The time-to-quality benchmark: its paired statistics, endpoints, and one tiny run → throughput → report."""

import json
import os

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy import stats

from conftest import REPO, run_cli

from benchmarks import stats as paired_stats
from benchmarks.fmnist_recipes import README_V2, RECIPES
from benchmarks.ttq import claims as ttq_claims
from benchmarks.ttq import endpoints as ttq_endpoints
from benchmarks.ttq import protocol as ttq
from benchmarks.ttq import report as ttq_report
from benchmarks.ttq import rows as ttq_rows

TINY_MODEL = ["model.depth=4", "model.width=32", "model.heads=2", "model.decoder_depth=1", "model.decoder_width=32",
              "model.decoder_heads=2", "train.batch_size=16", "optim.warmup_kimg=0.05"]


@pytest.mark.parametrize("name", sorted(ttq_rows.ROWS))
def test_every_row_is_a_valid_config(name):
    """A row's overrides load on the protocol's configs (a bad key or combination fails here, not hours into a run)."""
    from evaluation.config import load_eval_config
    from training.config import load_config

    defaults, row = ttq.Protocol(), ttq_rows.ROWS[name]
    trained = ttq_rows.ROWS[row.trains_as or name]
    for recipe in RECIPES.values():
        load_config(REPO / defaults.config, [*recipe, *trained.train_overrides])
    load_eval_config(REPO / defaults.eval_config, row.eval_overrides)


def test_an_evaluation_variant_shares_its_rows_run_and_speed(tmp_path):
    """unet_ddpm_noclip scores the snapshots of unet_ddpm's run (no second training) at unet_ddpm's img/s."""
    assert ttq.run_dir_of(tmp_path, "unet_ddpm_noclip", 3) == ttq.run_dir_of(tmp_path, "unet_ddpm", 3)
    (tmp_path / "throughput").mkdir()
    rounds = [{"maskdit_edm": 10.0, "unet_ddpm": 4.0}, {"unet_ddpm": 6.0, "maskdit_edm": 12.0}]
    (tmp_path / "throughput/1.json").write_text(json.dumps({"rounds": rounds}))
    speed = ttq_report.load_throughput(tmp_path)
    assert speed["unet_ddpm_noclip"] == speed["unet_ddpm"]
    # img/s = the reference's mean (11) × the mean side-by-side ratio (0.4, 0.5)
    assert speed["unet_ddpm_noclip"]["img_per_s"] == pytest.approx(11 * 0.45)
    assert speed["unet_ddpm_noclip"]["ratio"] == pytest.approx(0.45)


def test_throughput_ratios_pool_every_side_by_side_file(tmp_path):
    """Each ratio is taken within one round; the rounds of every file count, so a slower machine on one day moves
    the reference's img/s but not the ratios."""
    (tmp_path / "throughput").mkdir()
    (tmp_path / "throughput/1.json").write_text(json.dumps({"rounds": [{"maskdit_edm": 40.0, "dit_edm": 36.0}]}))
    (tmp_path / "throughput/2.json").write_text(json.dumps({"rounds": [{"maskdit_edm": 20.0, "dit_edm": 16.0},
                                                                        {"maskdit_edm": 20.0}]}))
    speed = ttq_report.load_throughput(tmp_path)
    assert speed["dit_edm"]["ratio"] == pytest.approx((0.9 + 0.8) / 2)
    assert speed["dit_edm"]["img_per_s"] == pytest.approx(np.mean([40.0, 20.0, 20.0]) * 0.85)
    assert speed["dit_edm"]["ratio_sd"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert speed["maskdit_edm"]["ratio"] == 1.0 and speed["maskdit_edm"]["rounds"] == [40.0, 20.0, 20.0]


def test_seeds_needed_matches_the_paired_t_test_power():
    """REFERENCE.md §7: ~10 seeds for an effect of one paired sd, ~34 for half of one (α 0.05, power 0.8); the
    chosen n has ≥ 80 % power and n − 1 has less. Power checked against a simulation of the t-test."""
    assert paired_stats.seeds_needed(1.0, 1.0) == 10
    assert paired_stats.seeds_needed(1.0, 0.5) == 34
    n = paired_stats.seeds_needed(0.03, np.log(1.05))
    assert paired_stats.paired_t_power(n, 0.03, np.log(1.05)) >= 0.8 > paired_stats.paired_t_power(n - 1, 0.03, np.log(1.05))
    rng = np.random.default_rng(0)
    diffs = rng.normal(0.5, 1.0, size=(20_000, 12))
    simulated = np.mean(stats.ttest_1samp(diffs, 0.0, axis=1).pvalue < 0.05)
    assert simulated == pytest.approx(paired_stats.paired_t_power(12, 1.0, 0.5), abs=0.015)


def test_paired_comparison_statistics():
    row, ref = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0, 4: 5.0, 5: 6.0}, {0: 1.5, 1: 2.4, 2: 3.6, 3: 4.4, 4: 5.5, 5: 6.3}
    c = paired_stats.paired_comparison(row, ref)
    assert c["mean"] == pytest.approx(-0.45) and c["p_improvement"] == 1.0
    assert c["ci95"][0] <= -0.45 <= c["ci95"][1] and c["ci95"][1] < 0
    assert c["wilcoxon_p"] == pytest.approx(stats.wilcoxon([-0.5, -0.4, -0.6, -0.4, -0.5, -0.3]).pvalue)
    assert paired_stats.probability_of_improvement(np.array([-1.0, 0.0, 1.0, -2.0])) == pytest.approx(0.625)
    # t interval: mean ± t_{0.975, 5} · sd / √6, with sd of the six differences by hand (deviations from −0.45:
    # −0.05, 0.05, −0.15, 0.05, −0.05, 0.15 → sum of squares 0.055)
    half = stats.t.ppf(0.975, 5) * np.sqrt(0.055 / 5) / np.sqrt(6)
    assert c["t_ci95"] == pytest.approx([-0.45 - half, -0.45 + half])
    assert not paired_stats.resolved(c)  # six seeds are fewer than the eight a claim needs


def test_a_result_needs_both_intervals_and_eight_seeds():
    """At t ≈ 2.05 with 10 seeds the percentile bootstrap (≈ mean ± 1.96·sd·√(9/10)/√10) excludes zero and the
    t interval (mean ± 2.26·sd/√10) does not: such a difference is not called a result."""
    ref = {s: 0.0 for s in range(10)}
    steady = paired_stats.paired_comparison({s: -0.02 + 0.002 * s for s in range(10)}, ref)  # mean -0.011
    assert paired_stats.resolved(steady) and "**-0.011**" in ttq_report.fmt_ci(steady)
    spread = np.array([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, -1.2, 1.2, 0.0])  # mean 0
    borderline = paired_stats.paired_comparison(
        dict(enumerate(0.01 * (spread - 2.05 * spread.std(ddof=1) / np.sqrt(10)))), ref)
    assert borderline["ci95"][1] < 0 < borderline["t_ci95"][1]
    assert not paired_stats.resolved(borderline) and "**" not in ttq_report.fmt_ci(borderline)


def run_json(row, seed, fds, kimg=(1.0, 2.0, 3.0)):
    return {"row": row, "seed": seed, "points": [{"kimg": k, "fd": f, "class_accuracy": 0.5}
                                                  for k, f in zip(kimg, fds)]}


def test_endpoints_on_the_shared_wall_clock_window():
    """A row twice as fast covers the same images in half the minutes: its wall-clock area is taken over the
    window both rows have points in, and its minutes to a target halve."""
    slow = {0: run_json("maskdit_edm", 0, (100.0, 50.0, 25.0))}
    fast = {0: run_json("dit_edm", 0, (100.0, 50.0, 25.0))}
    by_row, speed = {"maskdit_edm": slow, "dit_edm": fast}, {"maskdit_edm": {"img_per_s": 1000 / 60},
                                                             "dit_edm": {"img_per_s": 2000 / 60}}
    # slow: minute m has kimg m; fast: minute m has kimg 2m. Shared window: [1, 1.5] minutes.
    assert ttq_endpoints.shared_window(slow, 1000 / 60, fast, 2000 / 60) == pytest.approx((1.0, 1.5))
    ends = ttq_endpoints.endpoints(by_row, speed, "dit_edm", "maskdit_edm")
    grid = np.linspace(1, 1.5, 401)
    expect_fast = np.trapezoid(np.interp(grid * 2, [1, 2, 3], np.log([100, 50, 25])), grid) / 0.5
    assert ends["dit_edm"]["ln_fd_area_minutes"][0] == pytest.approx(expect_fast, rel=1e-6)
    assert ends["dit_edm"]["ln_fd_area_kimg"][0] == pytest.approx(ends["maskdit_edm"]["ln_fd_area_kimg"][0])
    assert ttq_endpoints.minutes_to_reach(fast[0], 2000 / 60, 75.0) == pytest.approx(0.75)
    assert ttq_endpoints.minutes_to_reach(slow[0], 1000 / 60, 20.0) is None


def test_speedup_as_the_papers_define_it():
    """Images the baseline needs to reach its final FD over images the row needs for the same FD: seed 0 gets to
    200 at 2 kimg (1.5×), seed 1 at 1 kimg (3×), seed 2 never (censored: lowest in the median, out of the mean)."""
    base = {s: run_json("dit_ddpm", s, (400.0, 300.0, 200.0)) for s in range(3)}
    row = {0: run_json("dit_speed", 0, (300.0, 200.0, 150.0)), 1: run_json("dit_speed", 1, (200.0, 150.0, 100.0)),
           2: run_json("dit_speed", 2, (500.0, 400.0, 300.0))}
    assert ttq_endpoints.kimg_to_reach(row[0], 250.0) == pytest.approx(1.5)
    out = ttq_endpoints.speedup_to_baseline_final({"dit_ddpm": base, "dit_speed": row}, "dit_speed", "dit_ddpm")
    assert out["not_reached"] == [2] and out["median_speedup"] == pytest.approx(1.5)
    assert out["ln_speedup"]["seeds"] == [0, 1]
    assert np.exp(out["ln_speedup"]["mean"]) == pytest.approx(np.sqrt(1.5 * 3.0))
    assert ttq_report.geometric_mean_ci(out["ln_speedup"]).startswith("2.12× [1.50, 3.00] (t: [")
    one = ttq_endpoints.speedup_to_baseline_final({"dit_ddpm": base, "dit_speed": {0: row[0], 2: row[2]}},
                                                  "dit_speed", "dit_ddpm")
    assert ttq_report.geometric_mean_ci(one["ln_speedup"]) == "1.50× (one seed)"  # no nan interval
    # two of three never get there: the median is not defined by what the budget shows
    row[1] = run_json("dit_speed", 1, (500.0, 400.0, 300.0))
    assert ttq_endpoints.speedup_to_baseline_final({"dit_ddpm": base, "dit_speed": row}, "dit_speed",
                                                   "dit_ddpm")["median_speedup"] is None


def test_geometric_grids_live_on_log_axes_and_wallclock_speedup_is_images_times_the_speed_ratio():
    """On a geometric grid a curve is linear in (ln kimg, ln FD): FD 400 → 100 over 4 → 16 kimg passes 200 at
    8 kimg (halfway in ln kimg), not at 12 (halfway in FD, the even grid's reading); the ln-FD area is the mean
    over ln kimg (by hand: segments of widths ln 2 and 3 ln 2). Wall-clock speed-up = image speed-up × the row's
    img/s over the baseline's."""
    def run(spacing, kimg, fds, row="maskdit_min_snr", seed=0):
        return {"row": row, "seed": seed, "protocol": {"spacing": spacing},
                "points": [{"kimg": k, "fd": f, "class_accuracy": 0.5} for k, f in zip(kimg, fds)]}

    assert ttq_endpoints.kimg_to_reach(run("geometric", (4, 16), (400, 100)), 200) == pytest.approx(8.0)
    assert ttq_endpoints.kimg_to_reach(run("even", (4, 16), (400, 100)), 200) == pytest.approx(12.0)
    a, b, c = np.log([300.0, 200.0, 120.0])
    by_log = ((a + b) / 2 + 3 * (b + c) / 2) / 4
    by_kimg = ((a + b) / 2 * 1 + (b + c) / 2 * 14) / 15
    assert ttq_endpoints.area_over_images(run("geometric", (1, 2, 16), (300, 200, 120))) == pytest.approx(by_log)
    assert ttq_endpoints.area_over_images(run("even", (1, 2, 16), (300, 200, 120))) == pytest.approx(by_kimg)

    by_row = {"maskdit_edm": {0: run("geometric", (4, 16), (400, 100), "maskdit_edm")},
              "maskdit_min_snr": {0: run("geometric", (4, 8, 16), (300, 100, 50))}}  # reaches 100 at 8 kimg: 2×
    speed = {"maskdit_edm": {"img_per_s": 100.0}, "maskdit_min_snr": {"img_per_s": 50.0}}  # at half the img/s
    images = ttq_endpoints.speedup_to_baseline_final(by_row, "maskdit_min_snr", "maskdit_edm")
    wall = ttq_endpoints.wallclock_speedup(by_row, speed, "maskdit_min_snr", "maskdit_edm")
    assert images["median_speedup"] == pytest.approx(2.0) and wall["median_speedup"] == pytest.approx(1.0)
    assert wall["img_per_s_ratio"] == 0.5 and ttq_endpoints.wallclock_speedup(by_row, {}, "maskdit_min_snr",
                                                                              "maskdit_edm") is None


def test_power_by_budget_is_the_comparison_of_shorter_runs():
    """Budget k = the first k grid points: its paired differences are those of the runs cut there (trapezoid mean
    of ln FD by hand), and the seeds needed follow the sd of those differences."""
    fd_b = {0: (100.0, 80.0, 60.0), 1: (110.0, 90.0, 70.0), 2: (90.0, 85.0, 50.0)}
    fd_a = {0: (90.0, 60.0, 55.0), 1: (100.0, 80.0, 66.0), 2: (85.0, 70.0, 52.0)}
    by_row = {"maskdit_min_snr": {s: run_json("maskdit_min_snr", s, f) for s, f in fd_a.items()},
              "maskdit_edm": {s: run_json("maskdit_edm", s, f) for s, f in fd_b.items()}}
    budgets = ttq_endpoints.power_by_budget(by_row, "maskdit_min_snr", "maskdit_edm")
    assert [b["kimg"] for b in budgets] == [2.0, 3.0]

    def area(fds, k):  # mean of the piecewise-linear ln FD over kimg 1..k, equal spacing: the trapezoid rule
        y = np.log(fds[:k])
        return (y[1:] + y[:-1]).sum() / 2 / (k - 1)

    for b, k in zip(budgets, (2, 3)):
        diffs = np.array([area(fd_a[s], k) - area(fd_b[s], k) for s in range(3)])
        assert b["mean"] == pytest.approx(diffs.mean(), rel=1e-4) and b["sd"] == pytest.approx(diffs.std(ddof=1), rel=1e-3)
        assert b["seeds_for_5pct"] == paired_stats.seeds_needed(b["sd"], np.log(1.05), most=200)
        assert b["seeds_for_observed"] == paired_stats.seeds_needed(b["sd"], abs(b["mean"]), most=200)
    assert ttq_endpoints.power_by_budget({k: {s: v[s] for s in (0, 1)} for k, v in by_row.items()},
                               "maskdit_min_snr", "maskdit_edm") == []  # fewer than 3 seeds: no sd worth reporting


def test_benchmark_run_throughput_report_tiny(tmp_path, tiny_fmnist):
    """Two rows × two seeds on a tiny budget with 3 evaluation points (the rows' wall-clock windows overlap unless
    one trains 3x faster than the other, even on a loaded machine), one throughput round, then the report
    from the written files alone; a re-run skips finished runs."""
    from evaluation import fmnist_features

    cache = tmp_path / "cache"
    env = {"MASKDIT_CACHE": str(cache)}
    net = fmnist_features.train_classifier(str(tiny_fmnist), epochs=1)
    cache.mkdir()
    torch.save(net.state_dict(), cache / fmnist_features.cache_path().name)
    eval_cfg = tmp_path / "eval.yaml"
    eval_cfg.write_text(f"base: {REPO / 'configs/test/fashion-mnist.yaml'}\nbatch_gpu: 16\npr_features: 16\n")
    results, work = tmp_path / "docs", tmp_path / "work"
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{ttq_report.README_BEGIN}\nstale table\n{ttq_report.README_END}\nrest\n")
    common = ["--rows", "maskdit_edm", "dit_tread", "--kimg", "0.096", "--points", "3", "--num-samples", "20",
              "--num-steps", "2", "--eval-config", str(eval_cfg), "--results", str(results), "--work", str(work),
              f"data.path={tiny_fmnist}", *TINY_MODEL]
    run_cli("benchmarks.ttq", "run", "--seeds", "0", "1", "--reference",
            f"fashion_mnist:train:{tiny_fmnist}", *common, env_extra=env)
    run_cli("benchmarks.ttq", "throughput", "--rounds", "1", "--steps", "2", "--throughput-threads", "1",
            *common, env_extra=env)
    run_cli("benchmarks.ttq", "report", "--readme", str(readme), *common, env_extra=env)

    tag = next(results.iterdir())
    runs = sorted(p.name for p in (tag / "runs").iterdir())
    assert runs == ["dit_tread-seed0.json", "dit_tread-seed1.json", "maskdit_edm-seed0.json", "maskdit_edm-seed1.json"]
    run = json.loads((tag / "runs/dit_tread-seed1.json").read_text())
    assert [p["kimg"] for p in run["points"]] == [0.032, 0.064, 0.096] and all(p["fd"] > 0 for p in run["points"])
    assert run["protocol"]["num_samples"] == 20 and run["machine"]
    assert tag.name == "fashion-mnist-0.096kimg-3pts-n20-heun2-t1"  # the working folder drops the evaluation part
    cfg = OmegaConf.load(work / "fashion-mnist-0.096kimg-3pts-t1" / "dit_tread-seed1/config.yaml")
    assert (cfg.model.route.ratio, cfg.model.use_decoder, cfg.train.seed) == (0.5, False, 1)
    summary = json.loads((tag / "summary.json").read_text())
    comp = summary["comparisons"]["dit_tread vs maskdit_edm"]
    assert comp["ln_fd_area_minutes"]["seeds"] == [0, 1] and len(comp["final_fd"]["diffs"]) == 2
    assert summary["rows"]["maskdit_edm"]["throughput_ratio"] == pytest.approx(1.0)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "stale table" not in text
    assert "DiT + TREAD routing 50%" in text and (tag / "quality.png").stat().st_size > 0

    # the evaluation-noise decomposition re-scores the snapshots; it exits with an error unless replicate 0
    # reproduces each committed FD exactly
    protocol = [a for a in common if a not in ("--rows", "maskdit_edm", "dit_tread") and "=" not in a]
    run_cli("benchmarks.ttq", "eval-noise", "--rows", "dit_tread", "maskdit_edm", "--seeds", "0", "1",
            "--replicates", "2", "--reference", f"fashion_mnist:train:{tiny_fmnist}", *protocol, env_extra=env)
    noise = json.loads(next((tag / "eval_noise").iterdir()).read_text())
    assert noise["total_seeds"] == 2 and noise["eval_sd"] >= 0 and len(noise["ln_fd"]["dit_tread"]["1"]) == 2

    # the sample-range diagnostic samples a snapshot exactly as the evaluation does
    run_cli("benchmarks.ttq", "sample-range", "--rows", "dit_tread", "--seeds", "1", "--grid-index", "-1", "--reference",
            f"fashion_mnist:train:{tiny_fmnist}", *protocol, env_extra=env)
    ranges = json.loads(next((tag / "sample_range").iterdir()).read_text())
    assert [(r["row"], r["seed"], r["kimg"]) for r in ranges["samples"]] == [("dit_tread", 1, 0.096)]
    assert 0 < ranges["reference"]["black"] < 1 and ranges["reference"]["above_1"] == 0
    missing = run_cli("benchmarks.ttq", "sample-range", "--rows", "dit_tread", "--seeds", "1", "7", *protocol,
                      check=False, env_extra=env)  # seed 7 never trained: one line, before the reference is read
    assert missing.returncode != 0 and missing.stderr.strip().count("\n") == 0
    assert "dit_tread-seed7" in missing.stderr and "0 of 3 evaluation snapshots" in missing.stderr

    before = {p.name: p.stat().st_mtime_ns for p in (tag / "runs").iterdir()}
    run_cli("benchmarks.ttq", "run", "--seeds", "0", "1", *common, env_extra=env)
    assert {p.name: p.stat().st_mtime_ns for p in (tag / "runs").iterdir()} == before


def test_a_posthoc_ema_protocol_scores_the_reconstruction_at_each_point(tmp_path, tiny_fmnist):
    """--ema 0.1: the run tracks power EMAs with snapshots on the grid, each point scores the σ_rel 0.1
    reconstruction there (not the classic EMA), and the results go to the protocol's own folder."""
    from evaluation import fmnist_features

    cache = tmp_path / "cache"
    cache.mkdir()
    torch.save(fmnist_features.train_classifier(str(tiny_fmnist), epochs=1).state_dict(),
               cache / fmnist_features.cache_path().name)
    eval_cfg = tmp_path / "eval.yaml"
    eval_cfg.write_text(f"base: {REPO / 'configs/test/fashion-mnist.yaml'}\nbatch_gpu: 16\npr_features: 0\n")
    common = ["--rows", "maskdit_edm", "--kimg", "0.064", "--points", "2", "--num-samples", "16", "--num-steps", "2",
              "--eval-config", str(eval_cfg), "--results", str(tmp_path / "docs"), "--work", str(tmp_path / "work"),
              f"data.path={tiny_fmnist}", *TINY_MODEL]
    for ema in ("classic", "0.1"):
        run_cli("benchmarks.ttq", "run", "--seeds", "0", "--ema", ema, "--reference",
                f"fashion_mnist:train:{tiny_fmnist}", *common, env_extra={"MASKDIT_CACHE": str(cache)})
    tags = sorted(p.name for p in (tmp_path / "docs").iterdir())
    assert len(tags) == 2 and tags[1] == tags[0] + "-ema0.1"
    classic, posthoc = (json.loads((tmp_path / "docs" / t / "runs/maskdit_edm-seed0.json").read_text()) for t in tags)
    assert [p["kimg"] for p in posthoc["points"]] == [0.032, 0.064]
    assert len(list((tmp_path / "work" / "fashion-mnist-0.064kimg-2pts-t1-posthoc/maskdit_edm-seed0/posthoc")
                    .iterdir())) == 8
    assert all(a["fd"] != b["fd"] for a, b in zip(classic["points"], posthoc["points"]))
    bad = run_cli("benchmarks.ttq", "run", "--ema", "0.4", *common, check=False)
    assert bad.returncode == 2 and "σ_rel" in bad.stderr.strip().splitlines()[-1]


def test_the_horizon_protocol_grid_recipe_and_names():
    """The horizon protocol: README command 1's budget on the readme-v2 recipe (= the embedded default's config
    values), 8 geometric points from 112/32 kimg, each a whole optimizer step of 32 images, the default sampler."""
    from training.config import load_config

    horizon = ttq.Protocol(kimg=112, points=8, num_samples=1000, num_steps=40, s_churn=20, recipe="readme-v2",
                           spacing="geometric")
    grid = ttq.grid_kimg(horizon)
    assert grid[0] == 3.488 and grid[-1] == 112 and len(grid) == 8  # 3.5 kimg = 109.4 steps → 109 steps
    assert all(round(k * 1000) % 32 == 0 for k in grid)
    ratios = np.diff(np.log(grid))
    assert np.allclose(ratios, np.log(32) / 7, atol=0.01)  # geometric: equal steps in ln kimg, ×1.64 each
    assert horizon.tag() == "fashion-mnist-readme-v2-112kimg-8pts-geo-n1000-heun40-churn20-t1"
    assert horizon.work_tag() == "fashion-mnist-readme-v2-112kimg-8pts-geo-t1"
    assert ttq.Protocol().tag() == "fashion-mnist-6.144kimg-6pts-n150-heun8-t1"  # older protocols keep their names
    default = load_config(REPO / "configs/train/fashion-mnist.yaml")
    pinned = load_config(REPO / "configs/train/fashion-mnist.yaml", README_V2)
    default.train.posthoc_ema.sigma_rels = []  # the one difference, on purpose (fmnist_recipes.py)
    assert (default.model, default.optim, default.mask, default.diffusion) == \
        (pinned.model, pinned.optim, pinned.mask, pinned.diffusion)
    assert (default.train.batch_size, default.train.ema_halflife_kimg, default.train.ema_rampup_ratio) == \
        (pinned.train.batch_size, pinned.train.ema_halflife_kimg, pinned.train.ema_rampup_ratio)
    with pytest.raises(SystemExit, match="too short for 8 geometric points"):
        ttq.grid_kimg(ttq.Protocol(kimg=0.128, points=8, spacing="geometric"))
    cfg = ttq.eval_config(horizon, 3, [])
    assert (cfg.sampling.num_steps, cfg.sampling.s_churn, cfg.num_samples, cfg.seed_start) == (40, 20, 1000, 3_000_000)


def test_a_geometric_run_snapshots_on_its_grid(tmp_path, tiny_fmnist):
    """train_run with a geometric grid writes exactly the grid's snapshots (train.snapshot_at_kimg)."""
    proto = ttq.Protocol(kimg=0.512, points=3, spacing="geometric")
    assert ttq.grid_kimg(proto) == [0.032, 0.096, 0.512]
    ttq.train_run(tmp_path / "geo", ttq_rows.ROWS["maskdit_edm"], 0, proto, [f"data.path={tiny_fmnist}", *TINY_MODEL])
    assert [ttq.snapshot_kimg(p) for p in ttq.snapshots(tmp_path / "geo", proto)] == [0.032, 0.096, 0.512]


def test_a_stopped_evaluation_scores_only_the_points_it_had_not(tmp_path):
    """evaluate_run keeps each point's scores as they come: after a kill (a point scored, the next line cut short)
    the re-run scores only the rest, and the result lists every point in grid order."""
    proto = ttq.Protocol(kimg=0.096, points=3)
    run_dir = tmp_path / "maskdit_edm-seed0"
    (run_dir / "snapshots").mkdir(parents=True)
    for kimg in ttq.grid_kimg(proto):
        (run_dir / "snapshots" / f"ema-{kimg:011.3f}.safetensors").write_bytes(b"")
    (run_dir / "stats.jsonl").write_text(json.dumps({"train_min": 1.5}) + "\n")
    scored = run_dir / f"scores-{proto.tag()}-maskdit_edm.jsonl"
    scored.write_text(json.dumps({"kimg": 0.032, "fd": 300.0}) + "\n" + '{"kimg": 0.064, "f')  # killed mid-line

    calls = []

    def evaluator(path, seed, overrides, grid):
        calls.append(ttq.snapshot_kimg(path))
        return {"fd": 100.0 + len(calls)}

    result = ttq.evaluate_run(run_dir, "maskdit_edm", 0, evaluator, proto)
    assert calls == [0.064, 0.096]
    assert [(p["kimg"], p["fd"]) for p in result["points"]] == [(0.032, 300.0), (0.064, 101.0), (0.096, 102.0)]
    again = ttq.evaluate_run(run_dir, "maskdit_edm", 0, evaluator, proto)
    assert calls == [0.064, 0.096] and again["points"] == result["points"]  # all kept: nothing re-scored


def test_run_claims_share_runs_between_processes(tmp_path):
    """A run directory is claimed by one `run` process at a time; a claim left by a dead process is taken over."""
    import subprocess
    import sys

    run_dir = tmp_path / "maskdit_edm-seed0"
    with ttq.RunClaim(run_dir) as first:
        assert first and (tmp_path / "maskdit_edm-seed0.lock").read_text().strip() == str(os.getpid())
        with ttq.RunClaim(run_dir) as second:
            assert not second
    assert not (tmp_path / "maskdit_edm-seed0.lock").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "maskdit_edm-seed0.lock").write_text(dead.stdout)
    with ttq.RunClaim(run_dir) as taken_over:
        assert taken_over


def test_extending_a_run_equals_training_it_from_scratch(tmp_path, tiny_fmnist):
    """--extend-from: a 0.128-kimg run started from the 0.064-kimg run of the same row and seed writes the same
    EMA snapshots, bit for bit, as one trained from scratch; a grid the shorter run did not snapshot is refused."""
    from safetensors.torch import load_file

    short = ttq.Protocol(kimg=0.064, points=2)
    long = ttq.Protocol(kimg=0.128, points=4)
    row, overrides = ttq_rows.ROWS["maskdit_edm"], [f"data.path={tiny_fmnist}", *TINY_MODEL]
    ttq.train_run(tmp_path / "short", row, 0, short, overrides)
    ttq.extend_run(tmp_path / "short", tmp_path / "extended", long)
    assert sorted(p.name for p in (tmp_path / "extended/snapshots").iterdir()) == [
        "ema-0000000.032.safetensors", "ema-0000000.064.safetensors"]
    ttq.train_run(tmp_path / "extended", row, 0, long, overrides)
    assert "resuming from" in (tmp_path / "extended/log.txt").read_text()  # it trained only the extra images
    ttq.train_run(tmp_path / "scratch", row, 0, long, overrides)

    extended, scratch = ttq.snapshots(tmp_path / "extended", long), ttq.snapshots(tmp_path / "scratch", long)
    assert [p.name for p in extended] == [p.name for p in scratch]
    for a, b in zip(extended, scratch):
        ta, tb = load_file(a), load_file(b)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    # a source that cannot continue this grid is declined with its reason, and the run trains from scratch
    assert "no EMA snapshot at kimg [0.048]" in ttq.why_not_extendable(tmp_path / "short", ttq.Protocol(kimg=0.096,
                                                                                                        points=2))
    assert not ttq.extend_run(tmp_path / "short", tmp_path / "offgrid", ttq.Protocol(kimg=0.096, points=2))
    assert not (tmp_path / "offgrid").exists()
    (tmp_path / "short/checkpoints" / next((tmp_path / "short/checkpoints").iterdir()).name / "checksums.json").unlink()
    assert "checkpoint cannot be used" in ttq.why_not_extendable(tmp_path / "short", long)


def test_sample_range_shares_by_hand():
    """Out of range before the clamp; white and black after quantising as dataio.image_io.to_uint8 does."""
    from benchmarks.ttq import sample_range as ttq_sample_range

    x = torch.tensor([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0]).view(1, 1, 2, 3)
    out = ttq_sample_range.range_stats(x)
    assert out["above_1"] == pytest.approx(1 / 6) and out["below_minus_1"] == pytest.approx(1 / 6)
    assert out["white"] == pytest.approx(3 / 6) and out["black"] == pytest.approx(2 / 6)
    assert out["mean"] == pytest.approx(x.double().mean().item())


def test_eval_noise_decomposition_by_hand():
    """Evaluation variance: the within-snapshot variance of the paired ln-FD difference over evaluation seeds,
    pooled over training seeds; total: the variance over training seeds of the committed runs' difference."""
    from benchmarks.ttq import eval_noise as ttq_eval_noise

    ln_fd = {"a": {0: [1.0, 1.2, 1.1], 1: [2.0, 2.0, 2.3]}, "b": {0: [0.9, 1.0, 1.1], 1: [2.0, 2.1, 2.0]}}
    # differences: seed 0 [0.1, 0.2, 0.0] (variance 0.01), seed 1 [0.0, -0.1, 0.3] (variance 0.0433...)
    committed = {n: {s: run_json(n, s, (9.0, float(np.exp(v[0])))) for s, v in d.items()} for n, d in ln_fd.items()}
    committed["a"][2], committed["b"][2] = run_json("a", 2, (9.0, np.exp(1.5))), run_json("b", 2, (9.0, np.exp(1.2)))
    out = ttq_eval_noise.decomposition(ln_fd, committed, "a", "b", point=-1)
    eval_var = (0.01 + np.var([0.0, -0.1, 0.3], ddof=1)) / 2
    total_var = np.var([0.1, 0.0, 0.3], ddof=1)  # replicate 0 of seeds 0, 1 and the committed seed 2
    assert out["eval_sd"] == pytest.approx(np.sqrt(eval_var))
    assert out["total_sd"] == pytest.approx(np.sqrt(total_var)) and out["total_seeds"] == 3
    assert out["eval_share_of_variance"] == pytest.approx(eval_var / total_var)
    assert ttq_eval_noise.replicate_eval_seed(7, 0) == 7  # replicate 0 is the protocol's own evaluation
    assert len({ttq_eval_noise.replicate_eval_seed(s, r) for s in range(100) for r in range(1, 10)}) == 900


def test_each_row_keeps_one_colour_across_the_plots_panels():
    colours = ttq_report.row_colours({title: list(names) for title, names in ttq_rows.PLOT_FAMILIES.items()})
    assert set(colours) == {n for names in ttq_rows.PLOT_FAMILIES.values() for n in names}
    for names in ttq_rows.PLOT_FAMILIES.values():
        assert len({colours[n] for n in names}) == len(names)  # distinct within a panel
    assert colours[ttq_rows.REFERENCE_ROW] == ttq_report.PALETTE[0]  # the reference is black wherever it appears
    assert list(colours.values()).count(ttq_report.PALETTE[0]) == 1  # and no other row is


def test_a_panel_that_repeats_drawn_rows_is_left_out():
    drawn = ttq_report.drawn_families({"a": ["x", "y"], "b": ["x", "y"], "c": ["x"], "d": ["y", "z"]})
    assert list(drawn) == ["a", "d"]


def paired(mean: float, seeds: int, half_width: float) -> dict:
    """A paired statistic as the report's summary holds it: both 95 % intervals mean ± half_width."""
    interval = [mean - half_width, mean + half_width]
    return {"mean": mean, "seeds": list(range(seeds)), "ci95": interval, "t_ci95": interval}


def claims_summary(rows: dict[str, int], areas: dict[str, dict], speedups: dict[str, dict] | None = None) -> dict:
    """A report summary with the given rows (name -> seeds), ln-FD area comparisons and speed-ups to the reference."""
    return {"rows": {name: {"seeds": list(range(n))} for name, n in rows.items()},
            "comparisons": {key: {"ln_fd_area_minutes": c, "ln_fd_area_kimg": None, "final_fd": None}
                            for key, c in areas.items()},
            "speedups": {row: {"wallclock": {"ln_speedup": c}, "images": {"ln_speedup": None}}
                         for row, c in (speedups or {}).items()},
            "paper_speedups": {}}


def test_claims_decide_each_early_call_again_at_the_horizon():
    """holds / reverses / vanishes / appears / still ties at ≥ 8 horizon seeds, open below, not run without rows;
    an endpoint the early phase had < 8 seeds for is not a call; speed-ups: higher is better."""
    ref = ttq_rows.REFERENCE_ROW
    names = ["maskdit_min_snr", "maskdit_speed", "dit_edm", "maskdit_edm2_pixel", "dit_tread", "maskdit_tread"]
    early = claims_summary({ref: 8, **{n: 8 for n in names}, "maskdit_tread": 3}, {
        f"maskdit_min_snr vs {ref}": paired(-0.05, 8, 0.01),  # better
        f"maskdit_speed vs {ref}": paired(+0.03, 8, 0.01),  # worse
        f"dit_edm vs {ref}": paired(+0.01, 8, 0.02),  # tie
        f"maskdit_edm2_pixel vs {ref}": paired(+0.06, 8, 0.01),  # worse, not run at the horizon
        f"dit_tread vs {ref}": paired(-0.04, 8, 0.01),  # better, open at the horizon
        f"maskdit_tread vs {ref}": paired(-0.02, 3, 0.01)},  # 3 seeds: no call
        speedups={"maskdit_min_snr": paired(np.log(1.3), 8, 0.1)})  # faster
    horizon = claims_summary({ref: 8, "maskdit_min_snr": 8, "maskdit_speed": 8, "dit_edm": 8, "dit_tread": 2}, {
        f"maskdit_min_snr vs {ref}": paired(+0.004, 8, 0.01),  # -> tie: vanishes
        f"maskdit_speed vs {ref}": paired(-0.03, 8, 0.01),  # -> better: reverses
        f"dit_edm vs {ref}": paired(-0.04, 8, 0.01),  # -> better: appears
        f"dit_tread vs {ref}": paired(+0.02, 2, 0.5)},  # 2 seeds: open, worse so far
        speedups={"maskdit_min_snr": paired(np.log(1.5), 8, 0.2)})  # still faster: holds
    rows, counts = ttq_claims.claims_rows(early, horizon)
    by_label = {r[0].split(" vs ")[0]: r for r in rows}
    label = lambda name: ttq_rows.ROWS[name].label  # noqa: E731
    assert by_label[label("maskdit_min_snr")][2] == "better -0.050 → +0.004: **vanishes (tie)**"
    assert by_label[label("maskdit_min_snr")][5] == "better 1.30× → 1.50×: **holds**"
    assert by_label[label("maskdit_speed")][2] == "worse +0.030 → -0.030: **reverses (better)**"
    assert by_label[label("dit_edm")][2] == "tie +0.010 → -0.040: **appears (better)**"
    assert by_label[label("maskdit_edm2_pixel")][2] == "worse +0.060 → not run"
    assert by_label[label("dit_tread")][2] == "better -0.040 → +0.020: open (2 seeds, worse so far)"
    assert by_label[label("dit_tread")][1] == "2/8"
    assert label("maskdit_tread") not in by_label  # the early phase never decided it
    assert counts == {"vanishes": 1, "holds": 1, "reverses": 1, "appears": 1, "not run": 1, "open": 1}
    text = ttq_claims.claims_markdown(early, horizon, "early", "late")
    assert "1 holds, 1 reverses, 1 vanishes, 1 appears, 1 open, 1 not run" in text
    assert ttq_claims.verdict("tie", "tie") == "still ties"
