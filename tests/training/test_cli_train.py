"""`diffusion-studio train`: a tiny real run with --json, and bad input -> exit 2 with one line."""

from __future__ import annotations

import json

import pytest

from diffusion_studio.cli import main


def test_json_run_then_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--dataset", "shapes", "--preset", "cpu-quick", "--out", str(out), "--image-size", "16",
            "--batch-size", "2", "--steps", "3", "--threads", "1", "--sample-every", "0", "--json"]
    assert main(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["event"] == "start" and lines[-1]["event"] == "done" and lines[-1]["step"] == 3
    assert any(e["event"] == "checkpoint" and e["checkpoint"].endswith("step-00000003.safetensors") for e in lines)
    assert main(args[:-5] + ["--steps", "5", "--resume", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["resumed"] is True and lines[0]["step"] == 3 and lines[-1]["step"] == 5


@pytest.mark.parametrize("extra, needle", [
    (["--dataset", "imagenet"], "Unknown dataset"),
    (["--dataset", "folder:/some/where"], "does not exist"),
    (["--dataset", "folder:"], "needs a path"),
    (["--hflip"], "Horizontal flips"),
    (["--nproc", "0"], "--nproc must be"),
    (["--two-shape-share", "1.5"], "two_shape_share must be"),
    (["--dataset", "folder:/tmp", "--two-shape-share", "0.2"], "Shapes dataset only"),
    (["--nproc", "3", "--batch-size", "8"], "does not split evenly"),
    (["--image-size", "33"], "not divisible"),
    (["--lr", "-0.1"], "lr must be"),
    (["--lr", "3"], "lr must be"),
    (["--steps", "0"], "steps must be"),
    (["--batch-size", "0"], "batch_size must be"),
    (["--resume"], "no run folder"),
    (["--p-uncond", "1"], "p_uncond must be in [0.0, 1.0), got 1.0."),
    (["--p-uncond", "-0.1"], "p_uncond must be in [0.0, 1.0)"),
    (["--p-uncond", "nan"], "p_uncond must be in [0.0, 1.0)"),
    (["--p-uncond", "some"], "argument --p-uncond: invalid float value: 'some'"),
    (["--ema-decay", "1"], "ema_decay must be in [0.0, 1.0), got 1.0."),
    (["--ema-decay", "1.5"], "ema_decay must be in [0.0, 1.0)"),
    (["--ema-decay", "-0.01"], "ema_decay must be in [0.0, 1.0)"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, extra, needle):
    code = main(["train", "--preset", "cpu-quick", "--out", str(tmp_path / "new"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "new").exists()


def test_existing_run_folder_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "something.txt").write_text("x")
    assert main(["train", "--preset", "cpu-quick", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err


def test_nproc_forwards_every_option_but_itself(tmp_path):
    from diffusion_studio.cli import build_parser
    from diffusion_studio.cli.train import forwarded_args

    argv = ["train", "--dataset", "shapes", "--out", str(tmp_path), "--preset", "cpu-quick", "--steps", "5",
            "--batch-size", "4", "--image-size", "16", "--lr", "0.001", "--seed", "3", "--device", "cpu",
            "--threads", "1", "--sample-every", "0", "--checkpoint-every", "2", "--two-shape-share", "0.25",
            "--p-uncond", "0.2", "--ema-decay", "0.99", "--init-from", str(tmp_path / "a"), "--resume", "--json",
            "--hflip", "--schedule", "cosine", "--learn-sigma", "--token-positions", "--no-pooled-text",
            "--cross-attention", "8"]
    parser = build_parser()
    args = parser.parse_args([*argv, "--nproc", "2"])
    forwarded = forwarded_args(args)
    assert vars(parser.parse_args(forwarded)) == {**vars(args), "nproc": 1}
    train = parser._subparsers._group_actions[0].choices["train"]
    options = {o for a in train._actions for o in a.option_strings if o not in ("-h", "--help", "--nproc")}
    assert options <= set(argv), options - set(argv)  # the test covers every option there is


@pytest.mark.skipif(__import__("torch").cuda.device_count() >= 2, reason="this machine has the GPUs")
def test_nproc_on_cuda_needs_a_gpu_per_process(tmp_path, capsys):
    code = main(["train", "--preset", "cpu-quick", "--out", str(tmp_path / "run"), "--device", "cuda",
                 "--nproc", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "needs 2 GPUs" in err, err


def test_p_uncond_and_ema_decay_reach_the_config(tmp_path):
    from diffusion_studio.cli import build_parser
    from diffusion_studio.cli.train import build_config

    parser = build_parser()
    base = ["train", "--preset", "cpu-quick", "--out", str(tmp_path / "run")]
    defaults = build_config(parser.parse_args(base))
    assert (defaults.p_uncond, defaults.ema_decay) == (0.1, 0.995)  # the preset's
    config = build_config(parser.parse_args([*base, "--p-uncond", "0.25", "--ema-decay", "0.99"]))
    assert (config.p_uncond, config.ema_decay) == (0.25, 0.99)
    assert (build_config(parser.parse_args([*base, "--p-uncond", "0"])).p_uncond) == 0.0  # never drop captions
    assert build_config(parser.parse_args(["train", "--out", str(tmp_path / "run")])).ema_decay == 0.999
