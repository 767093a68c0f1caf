"""geopak-train's command line: embed -> train from the cache, and one-line user errors."""

from __future__ import annotations

import json

import pytest

from geopak_model import train_cli

pytestmark = pytest.mark.filterwarnings("ignore:GEOPAK. no pretrained weights")


def _one_line_error(capsys, needle: str) -> None:
    err = capsys.readouterr().err.strip()
    assert needle in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err


# a phase-1 run into {tmp}/run: the arguments every other case adds one mistake to
RUN = ["--shards", "{shards}", "--phase", "1", "--out", "{tmp}/run"]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (
            ["--shards", "{tmp}/nowhere", "--phase", "1", "--out", "{tmp}/run"],
            "shard folder not found",
        ),
        (
            ["--shards", "{shards}", "--phase", "3", "--out", "{tmp}/run"],
            "argument --phase: invalid choice: 3",
        ),
        (
            ["--shards", "{shards}", "--phase", "one", "--out", "{tmp}/run"],
            "argument --phase: invalid",
        ),
        (["--shards", "{shards}", "--phase", "1"], "the following arguments are required: --out"),
        ([*RUN, "--preset", "huge"], "unknown --preset 'huge'"),
        ([*RUN, "--batch-size", "0"], "must be >= 1"),
        ([*RUN, "--config", "{tmp}/none.toml"], "model config file not found"),
        ([*RUN, "--load-from", "{tmp}/none.pt", "--preset", "tiny"], "checkpoint not found"),
        ([*RUN, "--features", "{tmp}", "--preset", "tiny"], "not an embedding cache"),
        ([*RUN, "--preset", "tiny", "--device", "gpu"], "--device 'gpu'"),
        (["embed", "--shards", "{tmp}/nowhere", "--out", "{tmp}/feats"], "shard folder not found"),
        (
            ["embed", "--shards", "{shards}", "--out", "{tmp}/feats", "--splits", "train,dev"],
            "--splits",
        ),
    ],
)
def test_user_errors_are_one_line(toy_shards, tmp_path, capsys, argv, needle):
    args = [a.format(tmp=tmp_path, shards=toy_shards) for a in argv]
    try:
        rc = train_cli.main(args)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    assert rc == 2
    _one_line_error(capsys, needle)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_help_explains_itself(capsys):
    with pytest.raises(SystemExit) as exc:
        train_cli.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in (
        "--shards",
        "--phase",
        "--resume",
        "--load-from",
        "--features",
        "embed",
        "best.pt",
    ):
        assert word in text
    with pytest.raises(SystemExit):
        train_cli.main(["embed", "--help"])
    assert "--checkpoint" in capsys.readouterr().out


def test_embed_then_train_from_cache_via_cli(toy_shards, tmp_path, capsys, one_thread):
    feats, run = tmp_path / "feats", tmp_path / "run"
    embed = [
        "embed",
        "--shards",
        str(toy_shards),
        "--out",
        str(feats),
        "--preset",
        "tiny",
        "--workers",
        "0",
        "--splits",
        "train,val",
    ]
    assert train_cli.main(embed) == 0
    assert sorted(p.name for p in feats.iterdir()) == ["manifest.json", "model.pt", "train", "val"]
    capsys.readouterr()
    # a finished cache does no work and says so
    assert train_cli.main(embed) == 0
    assert "nothing to do" in capsys.readouterr().err

    argv = [
        "--shards",
        str(toy_shards),
        "--phase",
        "0",
        "--out",
        str(run),
        "--features",
        str(feats),
        "--max-steps",
        "3",
        "--batch-size",
        "16",
        "--no-plots",
        "--workers",
        "0",
    ]
    assert train_cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "val @ step 3" in err and "densest_cell" in err and "done: phase 0, 3 steps" in err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert (
        len(rows) == 1
        and rows[0]["step"] == 3
        and set(rows[0]["baselines"]) == {"densest_cell", "geographic_median"}
    )
    assert (run / "best.pt").exists() and (run / "last.pt").exists()

    # a finished run run again (with or without --resume) does no work and says so
    assert train_cli.main(argv) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert train_cli.main([*argv, "--resume"]) == 0
    assert "nothing to do" in capsys.readouterr().err
    # another phase into the same folder is refused, one line
    argv[argv.index("--phase") + 1] = "1"
    assert train_cli.main(argv) == 2
    _one_line_error(capsys, "holds a phase 0 run")


def test_empty_val_split_is_a_one_line_error(tmp_path, capsys):
    """A val shard with no samples: refused up front, not a traceback after the first epoch."""
    from geopak_model.testing import make_toy_shards

    shards = make_toy_shards(tmp_path / "s", n=30, per_shard=10, splits=(0.8, 0.2, 0.0))
    for tar in (shards / "val").glob("*.tar"):
        tar.write_bytes(b"\0" * 1024)  # an empty tar archive
    (shards / "index.parquet").unlink()  # sizes come from the tars themselves
    assert (
        train_cli.main(
            [
                "--shards",
                str(shards),
                "--phase",
                "1",
                "--out",
                str(tmp_path / "run"),
                "--preset",
                "tiny",
                "--workers",
                "0",
            ]
        )
        == 2
    )
    _one_line_error(capsys, "no val samples")
