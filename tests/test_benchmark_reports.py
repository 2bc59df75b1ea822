"""The time-to-quality, GPU-check and memory reports: the README's short tables and the full reports under docs/ are generated from
the committed result files alone (the README's copies are what the report writes), and the generation picks what
it says it picks."""

import json
import shutil

from benchmarks.gpu_check import report as gpu_report
from benchmarks.markdown import replace_sections
from benchmarks.memory import report as memory_report
from benchmarks.ttq import claims as ttq_claims
from benchmarks.ttq import report as ttq_report
from conftest import REPO


def section(text: str, markers: tuple[str, str]) -> str:
    begin, end = markers
    return text[text.index(begin) + len(begin):text.index(end)]


def test_committed_readme_tables_are_the_reports_output(tmp_path):
    """README.md and docs/benchmarks/{gpu,memory}/README.md hold exactly what the report commands write from the
    committed files: no table is edited by hand."""
    for module, folder in ((gpu_report, "gpu"), (memory_report, "memory")):
        results = tmp_path / folder
        shutil.copytree(REPO / "docs" / "benchmarks" / folder, results)
        readme = tmp_path / "README.md"
        shutil.copy(REPO / "README.md", readme)
        module.write_report(results, [readme])
        assert readme.read_text() == (REPO / "README.md").read_text(), f"README's {folder} table is stale"
        assert (results / "README.md").read_text() == (REPO / "docs/benchmarks" / folder / "README.md").read_text()


# each time-to-quality protocol a page shows: its results folder, its marker section, the pages holding it
TTQ_SECTIONS = (
    ("fashion-mnist-6.144kimg-6pts-n150-heun8-t1", "ttq", ("README.md", "docs/benchmarks/ttq/README.md")),
    ("fashion-mnist-readme-v2-112kimg-8pts-geo-n500-heun40-churn20-t1", "ttq-horizon",
     ("docs/benchmarks/ttq/README.md",)),
)


def test_committed_time_to_quality_tables_are_the_reports_output(tmp_path):
    """The README's and the docs page's time-to-quality sections and each protocol's table.md are what
    `python -m benchmarks.ttq report` writes from the committed run and throughput files."""
    for folder, section, pages in TTQ_SECTIONS:  # the repository's layout, so the pages' relative links match
        repo = tmp_path / section
        results = repo / "docs/benchmarks/ttq" / folder
        shutil.copytree(REPO / "docs/benchmarks/ttq" / folder, results)
        copies = []
        for page in pages:
            copies.append(repo / page)
            copies[-1].parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / page, copies[-1])
        ttq_report.write_report(results, copies, section)
        assert (results / "table.md").read_text() == (REPO / "docs/benchmarks/ttq" / folder / "table.md").read_text()
        for page, copy in zip(pages, copies):
            assert copy.read_text() == (REPO / page).read_text(), f"{page}'s {section} section is stale"


def test_committed_claims_section_is_the_claims_output(tmp_path):
    """The docs page's table of the early phase's calls at the horizon is what `python -m benchmarks.ttq claims`
    writes from the two protocols' committed files."""
    page = tmp_path / "README.md"
    shutil.copy(REPO / "docs/benchmarks/ttq/README.md", page)
    ttq_claims.write_claims(REPO / "docs/benchmarks/ttq", ttq_claims.EARLY, ttq_claims.HORIZON, [page])
    assert page.read_text() == (REPO / "docs/benchmarks/ttq/README.md").read_text(), "the ttq-claims section is stale"


def gpu_row(name: str, arch: str, img_per_s: float, **extra) -> dict:
    return {"name": name, "arch": arch, "batch": 256, "options": "-", "img_per_s": img_per_s, "gflop_per_img": 393.0,
            "tflop_per_s": img_per_s * 0.393, "mfu": img_per_s * 0.393 / 798, "peak_gib": 60.0, **extra}


def test_gpu_summary_takes_the_newest_check_and_each_models_fastest_row(tmp_path):
    env = {"gpu": "NVIDIA H100", "torch": "2.11.0", "triton": "3.6.0", "peak_tflops_for_mfu": 798.0}
    old = {"environment": {**env, "when": "2026-01-01 00:00:00"},
           "rows": [gpu_row("MaskDiT-XL/2 eager", "MaskDiT-XL/2", 9999)]}
    new = {"environment": {**env, "when": "2026-02-01 00:00:00"},
           "rows": [gpu_row("MaskDiT-XL/2 eager", "MaskDiT-XL/2", 700, step_s=0.36),
                    gpu_row("MaskDiT-XL/2 compiled blocks", "MaskDiT-XL/2", 1100, step_s=0.23, compile_s=41),
                    {"name": "MaskDiT-XL/2 compiled step", "error": "did not finish within 170 s"},
                    {"name": "DiT-XL/2 eager", "error": "exit 1: OutOfMemoryError"}]}
    (tmp_path / "20260101-h100-gpu_check.json").write_text(json.dumps(old))
    (tmp_path / "20260201-h100-gpu_check.json").write_text(json.dumps(new))
    (tmp_path / "README.md").write_text("intro\n" + "\n".join(gpu_report.FULL) + "\n")
    readme = tmp_path / "top.md"
    readme.write_text("a\n" + "\n".join(gpu_report.SUMMARY) + "\nb\n")
    gpu_report.write_report(tmp_path, [readme])
    summary = section(readme.read_text(), gpu_report.SUMMARY)
    assert "| compiled blocks | 1100 |" in summary and "9999" not in summary and "2026-02-01" in summary
    assert "| DiT-XL/2, batch 128 | no row finished |" in summary
    full = (tmp_path / "README.md").read_text()
    assert full.index("20260201") < full.index("20260101")  # newest first
    assert "| did not finish within 170 s |" in full and "| 0.230 | 41 |" in full
    assert "| – | – |" in section(full, gpu_report.FULL)  # the old check's row lacks step and compile times


def test_memory_summary_puts_options_down_and_folders_across(tmp_path):
    def rows(peaks: dict) -> list[dict]:
        return [{"grad_checkpointing": mode, "every": every, "params_m": 730.0, "static_gib": 13.6,
                 "saved_per_image_mib": 1.0, "saved_gib": peak - 13.6, "expected_peak_gib": peak}
                for (mode, every), peak in peaks.items()]

    for folder, peaks in {"dit-xl2-b128-bf16": {("none", 1): 61.64, ("all", 1): 16.9},
                          "maskdit-xl2-b256-bf16": {("none", 1): 75.5, ("decoder", 1): 64.3, ("all", 1): 19.6},
                          "unlisted": {("none", 1): 1.0}}.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "memory.json").write_text(json.dumps(rows(peaks)))
    readme = tmp_path / "top.md"
    readme.write_text("\n".join(memory_report.SUMMARY) + "\n")
    memory_report.write_report(tmp_path, [readme])
    summary = section(readme.read_text(), memory_report.SUMMARY).strip().splitlines()
    assert summary[0] == "| `model.grad_checkpointing` / every | MaskDiT-XL/2 b256 | DiT-XL/2 b128 |"
    assert summary[2:] == ["| none / 1 | 75.5 | 61.6 |", "| decoder / 1 | 64.3 | – |", "| all / 1 | 19.6 | 16.9 |"]
    assert "### `unlisted`" in (tmp_path / "README.md").read_text()  # the full report has every folder


def test_a_file_without_the_markers_is_one_error_line(tmp_path, capsys):
    plain = tmp_path / "plain.md"
    plain.write_text("no markers here\n")
    try:
        replace_sections(plain, {gpu_report.SUMMARY: "table\n"})
    except SystemExit as exit_:
        assert str(plain) in str(exit_) and "gpu-summary:begin" in str(exit_) and "\n" not in str(exit_)
    else:
        raise AssertionError("no error")
    assert plain.read_text() == "no markers here\n"
