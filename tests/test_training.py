"""Training on tiny models and data (CPU): the loop, checkpoints, kill-and-resume, DDP, freezing, precision."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minibert.data import read_conll, read_sts_tsv
from minibert.multitask import MultiTaskModel
from minibert.train import load_config, train
from minibert.train.evaluate import evaluate_task
from minibert.train.progress import LogWindow

from conftest import merge, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def run_config(config: dict, path: Path):
    path.write_text(json.dumps(config))
    return load_config(path)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return {**load_file(folder / "model.safetensors"), **{"head." + k: v for k, v in
                                                          load_file(folder / "heads.safetensors").items()}}


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_the_log_says_how_often_clipping_cut_the_gradient(tiny_model_dir, tiny_data, tmp_path):
    """The mean gradient norm before clipping, and the share of steps it was above max_grad_norm, by hand for
    a window; in a run, every step is cut at a bound of 1e-9 and none at 1e9, and their norms are the same
    (the first step's, before anything moved)."""
    window = LogWindow(max_grad_norm=1.0)
    for norm in (0.5, 2.0, 3.5):
        window.add({"samples": 4, "tokens": 20, "loss": {"topic": 1.0}, "grad_norm": norm})
    window.add({"samples": 0, "tokens": 0, "loss": {}, "grad_norm": 0.0})  # nothing trained: no norm
    summary = window.summary()
    assert (summary["grad_norm"], summary["clipped"]) == (2.0, 2 / 3)
    firsts = []
    for bound in (1e-9, 1e9):
        out = tmp_path / f"run-{bound}"
        train(run_config(tiny_config(tiny_model_dir, tiny_data, out, steps=1, eval={"every": 0},
                                     output={"log_every": 1}, optim={"max_grad_norm": bound}), tmp_path / "c.json"))
        first = next(r for r in read_log(out) if "loss" in r)
        assert first["clipped"] == (1.0 if bound < 1 else 0.0)
        firsts.append(first["grad_norm"])
    assert firsts[0] == pytest.approx(firsts[1], rel=1e-6)


def test_a_run_trains_logs_evaluates_and_saves(tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "run"
    config = run_config(tiny_config(tiny_model_dir, tiny_data, out, output={"plot": True}), tmp_path / "c.json")
    result = train(config)
    assert result["steps"] == 12
    records = read_log(out)
    losses = [r for r in records if "loss" in r]
    assert [r["step"] for r in losses] == [2, 4, 6, 8, 10, 12]
    assert all(r["samples_per_s"] > 0 and r["tokens_per_s"] > 0 for r in losses)
    assert all(r["clipped"] in (0.0, 0.5, 1.0) and r["grad_norm"] > 0 for r in losses)  # two steps a line
    trained_tasks = {t for r in losses for t in r["loss"]}
    assert trained_tasks == {"sts", "topic", "sentiment", "nli", "ner"}  # round robin reaches every task
    dev = [r for r in records if "dev" in r]
    assert [r["step"] for r in dev] == [6, 12]
    assert set(dev[0]["dev"]) == {"sts", "topic", "nli", "ner", "mean"}
    final = MultiTaskModel.load(out / "final")  # the last dev evaluation scored the final weights
    assert dev[-1]["dev"]["ner"] == pytest.approx(evaluate_task(final, "ner", read_conll(tiny_data / "ner.txt")))
    mains = [dev[-1]["dev"][t][m] for t, m in (("sts", "spearman"), ("topic", "accuracy"), ("nli", "accuracy"),
                                                ("ner", "f1"))]
    assert dev[-1]["dev"]["mean"] == pytest.approx(sum(mains) / 4)
    assert json.loads((out / "config.json").read_text())["steps"] == 12  # the resolved configuration
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for folder in ("best", "final"):  # both load as multi-task models
        model = MultiTaskModel.load(out / folder)
        assert set(model.tasks) == {"sts", "topic", "sentiment", "nli", "ner"}
    assert model.tasks["sentiment"].labels == ["negative", "positive"]
    assert model.tasks["topic"].labels == ["Business", "Sci/Tech", "Sports", "World"]  # found in the data
    best_step = json.loads((out / "result.json").read_text())["best"]["step"]
    assert best_step == max(dev, key=lambda r: (r["dev"]["mean"], -r["step"]))["step"]  # the first of the best
    best = MultiTaskModel.load(out / "best")  # the test numbers are best/'s, scored once at the end
    assert result["test"]["sts"] == evaluate_task(best, "sts", read_sts_tsv(tiny_data / "sts.tsv"))


def test_training_lowers_the_loss(tiny_model_dir, tiny_data, tmp_path):
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", steps=60, eval={"every": 0},
                         output={"log_every": 5, "checkpoint_every": 60}, optim={"lr": 3e-3},
                         schedule={"warmup_ratio": 0.0})
    config["tasks"] = [t for t in config["tasks"] if t["name"] == "topic"]
    train(run_config(config, tmp_path / "c.json"))
    losses = [r["loss"]["topic"] for r in read_log(tmp_path / "run") if "loss" in r]
    assert losses[-1] < 0.5 * losses[0]


def launch(config_path: Path, *extra: str, nproc: int = 1, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    script = [str(ROOT / "scripts" / "train.py"), "--config", str(config_path), *extra]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(29500 + os.getpid() % 1000), *script]
    else:
        cmd = [sys.executable, *script]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def with_methods(config: dict, teacher: Path, task_teacher: Path) -> dict:
    """The multi-task methods (minibert.train: balance, pcgrad, distill of both kinds, annealed sampling;
    minibert.adapter, minibert.branch) all at once: what they learn (the log-variances, the adapters, the
    branch) and draw (the tasks of each step) must survive a kill and agree between processes."""
    config = merge(config, {"sampling": {"strategy": "temperature", "temperature": 1.0, "temperature_end": 4.0,
                                         "tasks_per_step": 2},
                            "optim": {"pcgrad": True, "loss_balance": "uncertainty", "distill_from": str(teacher)}})
    adapted = {"topic", "ner"}  # an adapter each, and half their gradient on the encoder; NER a branch too
    config["tasks"] = [{**t, "head": {**t.get("head", {}), "adapter": 4, "branch": int(t["name"] == "ner")},
                        "encoder_grad": 0.5} if t["name"] in adapted else t for t in config["tasks"]]
    # a teacher of their own for topic (a sentence's classes) and NER (each word piece's)
    config["tasks"] = [{**t, "teacher": str(task_teacher)} if t["name"] in ("topic", "ner") else t
                       for t in config["tasks"]]
    return config


@pytest.mark.parametrize("methods", [False, True], ids=["plain", "multitask-methods"])
def test_sigkill_then_resume_ends_with_the_same_weights(tiny_model_dir, tiny_data, tiny_teacher_dir, tmp_path,
                                                       methods):
    steps = 200 if methods else 400  # two tasks a step
    base = tiny_config(tiny_model_dir, tiny_data, tmp_path / "a", steps=steps, eval={"every": 100},
                       output={"checkpoint_every": 10, "log_every": 10})
    if methods:
        base = with_methods(base, tiny_model_dir, tiny_teacher_dir)
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps({**base, "output_dir": str(tmp_path / "b")}))
    # Each process measures which CPU kernels the fast path runs, and two may choose differently (which rounds
    # differently): here the resumed one is made to, and must still run the kernels the killed one ran.
    measured, measured_otherwise = ({"MINIBERT_CPU_LINEAR": linear, "MINIBERT_CPU_ATTENTION": attention}
                                    for linear, attention in (("blas", "products"), ("onednn,blas", "sdpa")))
    finish(launch(tmp_path / "a.json", env=measured))  # uninterrupted

    killed = launch(tmp_path / "b.json", env=measured)
    checkpoint = tmp_path / "b" / "checkpoint.pt"
    deadline = time.time() + 240
    while not checkpoint.exists() and time.time() < deadline and killed.poll() is None:
        time.sleep(0.005)
    time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    state = torch.load(checkpoint, weights_only=False)
    assert 0 < state["step"] < steps
    assert state["kernels"] == {"linear:float32": "blas", "attention:float32": "products"}
    assert not (tmp_path / "b" / "final").exists()

    finish(launch(tmp_path / "b.json", "--resume", env=measured_otherwise))
    a, b = weights(tmp_path / "a" / "final"), weights(tmp_path / "b" / "final")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resuming from step {state['step']}"
    dev_a = [r["dev"] for r in read_log(tmp_path / "a") if "dev" in r]
    dev_b = [r["dev"] for r in read_log(tmp_path / "b") if "dev" in r]
    assert dev_a == dev_b  # the same evaluations at the same steps
    if methods:  # the learned loss weights, logged every 10 steps, continue where they were
        balance_a = [r["balance"] for r in read_log(tmp_path / "a") if "balance" in r]
        assert balance_a == [r["balance"] for r in read_log(tmp_path / "b") if "balance" in r]
        assert len(balance_a) == steps // 10 and balance_a[-1]["sts"] != 1.0
    steps_logged = [r["step"] for r in read_log(tmp_path / "b") if "loss" in r]
    assert steps_logged == sorted(set(steps_logged)), "resumed log repeats steps"


def test_resume_refuses_a_changed_configuration(tiny_model_dir, tiny_data, tmp_path):
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", steps=4, eval={"every": 0})
    train(run_config(config, tmp_path / "c.json"))
    with pytest.raises(ValueError, match=r"different configuration \(changed: \['optim.lr'\]\)"):
        train(run_config(merge(config, {"optim": {"lr": 0.5}}), tmp_path / "c2.json"), resume=True)


@pytest.mark.parametrize("methods", [False, True], ids=["plain", "multitask-methods"])
def test_two_gloo_processes_match_one_process(tiny_model_dir, tiny_data, tiny_teacher_dir, tmp_path, methods):
    """DDP on 2 CPU processes (gloo, loopback): replicas identical and equal to one process with the
    same global batch (the tiny model has no dropout, so both compute the same function). NER is in:
    its loss averages over labelled word pieces, which the two halves of a batch hold unequal numbers of;
    and pairs, whose in-batch negatives are gathered from both processes."""
    base = tiny_config(tiny_model_dir, tiny_data, tmp_path / "single", steps=10, batch_size=4, eval={"every": 0},
                       output={"checkpoint_every": 10})
    base["tasks"] = [t for t in base["tasks"] if t["type"] != "nli"]
    base["tasks"].append({"name": "pairs", "type": "pairs", "train": str(tiny_data / "pairs.tsv")})
    if methods:
        base = with_methods(base, tiny_model_dir, tiny_teacher_dir)
    (tmp_path / "single.json").write_text(json.dumps(base))
    (tmp_path / "ddp.json").write_text(json.dumps({**base, "output_dir": str(tmp_path / "ddp")}))
    single = launch(tmp_path / "single.json")
    finish(single)
    finish(launch(tmp_path / "ddp.json", nproc=2))
    assert {"step": 10, "replicas_identical": True} in read_log(tmp_path / "ddp")
    logged = {name: [(r["step"], r["loss"]) for r in read_log(tmp_path / name) if "loss" in r]
              for name in ("single", "ddp")}
    assert [s for s, _ in logged["ddp"]] == [s for s, _ in logged["single"]]
    for (_, one), (_, two) in zip(logged["single"], logged["ddp"], strict=True):  # the whole batch's loss, logged
        assert two.keys() == one.keys() and all(two[t] == pytest.approx(one[t], rel=1e-4) for t in one)
    a, b = weights(tmp_path / "single" / "final"), weights(tmp_path / "ddp" / "final")
    changed = 0
    initial = load_file(tiny_model_dir / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4, msg=lambda m, k=key: f"{k}: {m}")
        changed += key in initial and not torch.equal(a[key], initial[key])
    assert changed > 10  # the encoder did train


def test_encoder_frozen_for_the_first_steps(tiny_model_dir, tiny_data, tmp_path):
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", steps=6, eval={"every": 0},
                         encoder={"freeze_encoder_steps": 6})
    train(run_config(config, tmp_path / "c.json"))
    initial = load_file(tiny_model_dir / "model.safetensors")
    final = load_file(tmp_path / "run" / "final" / "model.safetensors")
    assert all(torch.equal(initial[k], final[k]) for k in initial)
    config = merge(config, {"output_dir": str(tmp_path / "run2"), "steps": 8,
                            "encoder": {"freeze_encoder_steps": 4, "freeze": ["embeddings"]}})
    train(run_config(config, tmp_path / "c2.json"))
    final = load_file(tmp_path / "run2" / "final" / "model.safetensors")
    assert torch.equal(initial["embeddings.word_embeddings.weight"], final["embeddings.word_embeddings.weight"])
    assert not torch.equal(initial["encoder.layer.1.output.dense.weight"], final["encoder.layer.1.output.dense.weight"])


def test_bf16_autocast_on_cpu_trains(tiny_model_dir, tiny_data, tmp_path):
    """bf16 autocast must really run (losses differ from fp32 in the last bits) and follow fp32 closely."""
    losses = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        config = tiny_config(tiny_model_dir, tiny_data, out, steps=6, eval={"every": 0}, output={"log_every": 1},
                             runtime={"precision": precision})
        train(run_config(config, tmp_path / f"{precision}.json"))
        losses[precision] = [v for r in read_log(out) if "loss" in r for v in r["loss"].values()]
    assert len(losses["bf16"]) == len(losses["fp32"]) == 6
    assert losses["bf16"] != losses["fp32"]
    torch.testing.assert_close(torch.tensor(losses["bf16"]), torch.tensor(losses["fp32"]), rtol=0.05, atol=0.01)


def test_a_process_without_its_gpu_is_a_clear_error(monkeypatch):
    """Under torchrun each process takes GPU LOCAL_RANK; more processes than GPUs must say so."""
    from minibert.train.trainer import pick_device

    monkeypatch.setenv("LOCAL_RANK", str(torch.cuda.device_count()))  # one past the last GPU (0 on CI)
    no_gpu = r"device cuda(:99)?: this torch .* sees no CUDA GPU"
    with pytest.raises(ValueError, match=r"LOCAL_RANK=\d+ needs GPU \d+, but this machine has \d+"
                       if torch.cuda.is_available() else no_gpu):
        pick_device("cuda")
    with pytest.raises(ValueError, match=r"device cuda:99: this machine has \d+ CUDA GPU"
                       if torch.cuda.is_available() else no_gpu):
        pick_device("cuda:99")
    assert pick_device("cpu") == torch.device("cpu")  # a CPU run never asks for a GPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal of fp16")
def test_fp16_needs_cuda(tiny_model_dir, tiny_data, tmp_path):
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", runtime={"precision": "fp16"})
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        train(run_config(config, tmp_path / "c.json"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")
@pytest.mark.parametrize("methods", [False, True], ids=["plain", "multitask-methods"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_mixed_precision_follows_fp32(tiny_model_dir, tiny_data, tiny_teacher_dir, tmp_path, precision,
                                          methods):
    """On CUDA, bf16 autocast and fp16 with the gradient scaler train like fp32 (with the multi-task methods
    too: their gradients meet the scaler); the checkpoint holds the scaler state and resumes on the GPU."""
    losses = {}
    for p in ("fp32", precision):
        out = tmp_path / p
        config = tiny_config(tiny_model_dir, tiny_data, out, steps=6, eval={"every": 0},
                             output={"log_every": 1, "checkpoint_every": 3}, runtime={"precision": p, "device": "cuda"})
        if methods:
            config = with_methods(config, tiny_model_dir, tiny_teacher_dir)
        train(run_config(config, tmp_path / f"{p}.json"))
        losses[p] = [v for r in read_log(out) if "loss" in r for v in r["loss"].values()]
    assert losses[precision] != losses["fp32"]  # autocast really ran
    torch.testing.assert_close(torch.tensor(losses[precision]), torch.tensor(losses["fp32"]), rtol=0.05, atol=0.01)
    scaler = torch.load(tmp_path / precision / "checkpoint.pt", weights_only=False)["scaler"]
    assert bool(scaler) == (precision == "fp16")  # a disabled scaler saves an empty state
    if precision == "fp16":
        assert scaler["scale"] > 0 and scaler["_growth_tracker"] >= 0
    # Resuming from the last checkpoint loads every state on the GPU (RNG, scaler, optimizer) and runs no
    # step; mid-run resumption is the CPU kill-and-resume test's job.
    trained = weights(tmp_path / precision / "final")
    train(load_config(tmp_path / f"{precision}.json"), resume=True)
    assert all(torch.equal(trained[k], v) for k, v in weights(tmp_path / precision / "final").items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")
def test_cuda_sdpa_uses_a_fused_kernel(minilm_dir):
    """With the math fallback disabled, SDPA must still run: flash or memory-efficient attention."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from minibert import SentenceEncoder

    encoder = SentenceEncoder.from_pretrained(minilm_dir, device="cuda", dtype=torch.bfloat16)
    batch = encoder.tokenizer(["a short one", "a somewhat longer sentence with more tokens in it"]).to("cuda")
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        emb = encoder(batch)
        emb.float().sum().backward()
    reference = SentenceEncoder.from_pretrained(minilm_dir)(batch.to("cpu")).detach()  # fp32, CPU
    assert torch.nn.functional.cosine_similarity(emb.detach().float().cpu(), reference).min() > 0.999
    assert encoder.bert.blocks[0].attention.query.weight.grad.abs().sum() > 0


def test_dropout_option_reaches_the_encoder(tiny_model_dir, tiny_data, tmp_path):
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", steps=2, eval={"every": 0},
                         encoder={"dropout": 0.25})
    train(run_config(config, tmp_path / "c.json"))
    saved = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert saved["hidden_dropout_prob"] == saved["attention_probs_dropout_prob"] == 0.25
    assert json.loads((tiny_model_dir / "config.json").read_text())["hidden_dropout_prob"] == 0.0


def test_sam_takes_the_gradient_at_the_perturbed_weights(tiny_model_dir, tiny_data, tmp_path):
    """One SAM step = the plain step's optimizer fed the gradient at w + rho * g / |g|, from weights w."""
    from minibert.train.trainer import Trainer

    rho = 0.5

    def first_step(sam_rho: float, shift=None) -> tuple[list, list]:
        config = tiny_config(tiny_model_dir, tiny_data, tmp_path / f"run{sam_rho}", steps=1, eval={"every": 0},
                             optim={"sam_rho": sam_rho, "max_grad_norm": 1e9})
        config["tasks"] = [t for t in config["tasks"] if t["name"] == "topic"]
        trainer = Trainer(run_config(config, tmp_path / "c.json"))
        params = list(trainer.model.parameters())
        if shift is not None:
            with torch.no_grad():
                for p, s in zip(params, shift, strict=True):
                    p.add_(s)
        seen = {}

        def record(optimizer, args, kwargs) -> None:  # what the optimizer is about to use
            seen["weights"] = [p.detach().clone() for p in params]
            seen["grads"] = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]

        trainer.optimizer.register_step_pre_hook(record)
        trainer.train_step()
        return seen["weights"], seen["grads"]

    w, g = first_step(0.0)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in g]))
    _, g_perturbed = first_step(0.0, shift=[x * rho / norm for x in g])
    w_sam, g_sam = first_step(rho)
    for a, b in zip(w_sam, w, strict=True):
        assert torch.equal(a, b)  # the weights are put back before the optimizer steps
    for a, b in zip(g_sam, g_perturbed, strict=True):
        torch.testing.assert_close(a, b)
    assert sum(not torch.allclose(a, plain) for a, plain in zip(g_sam, g, strict=True)) > 10


def test_logged_learning_rates_are_the_top_layer_and_the_heads(tiny_model_dir, tiny_data, tmp_path):
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", steps=4, eval={"every": 0},
                         output={"log_every": 1}, optim={"lr": 1e-3, "head_lr": 1e-2, "layer_decay": 0.5},
                         schedule={"warmup_ratio": 0.0, "shape": "constant"})
    train(run_config(config, tmp_path / "c.json"))
    assert [r["lr"] for r in read_log(tmp_path / "run") if "lr" in r] == [{"top_layer": 1e-3, "heads": 1e-2}] * 4


def test_several_training_files_and_a_cross_encoder(tiny_model_dir, tiny_data, tmp_path):
    """A task's train may be a list of files, read one after the other; a cross-encoder trains, and the
    test score is that of the saved best checkpoint."""
    from minibert.train.batches import load_task_data

    extra = tmp_path / "extra.tsv"
    extra.write_text("g\ts\t2012\t9\t0.300\tA man cuts an onion.\tTwo birds fly.\n", encoding="utf-8")
    sts = {"name": "sts", "type": "sts", "train": [str(tiny_data / "sts.tsv"), str(extra)],
           "dev": str(tiny_data / "sts.tsv")}
    cross = {"name": "cross", "type": "cross_sts", "train": str(tiny_data / "sts.tsv"),
             "dev": str(tiny_data / "sts.tsv"), "test": str(tiny_data / "sts.tsv")}
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", tasks=[sts, cross], steps=4, eval={"every": 4})
    resolved = run_config(config, tmp_path / "c.json")
    gold = read_sts_tsv(tiny_data / "sts.tsv")
    train_examples = load_task_data(resolved, resolved.tasks[0], 0)[0]
    assert [(e.a, e.b) for e in train_examples] == [(e.a, e.b) for e in gold] + [("A man cuts an onion.",
                                                                                  "Two birds fly.")]
    result = train(resolved)
    assert "sts" not in result["test"]  # it has no test file
    best = MultiTaskModel.load(tmp_path / "run" / "best")
    assert result["test"]["cross"] == pytest.approx(evaluate_task(best, "cross", gold))
    config["tasks"][0]["train"] = [str(extra), 3]
    with pytest.raises(ValueError, match=r"task 'sts': train must be str \| list\[str\] \| None, got \[.*, 3\]"):
        run_config(config, tmp_path / "c.json")
    config["tasks"][0]["train"] = []
    with pytest.raises(ValueError, match="task 'sts': train must be a path or a list of paths, got"):
        run_config(config, tmp_path / "c.json")


def test_dataloader_workers_and_a_finished_resume(tiny_model_dir, tiny_data, tmp_path):
    """Batches tokenized by two worker processes train exactly as in-process ones; resuming a finished
    run (with another worker count, which is not part of the recipe) leaves weights and log as they were."""
    finals = {}
    for workers in (0, 2):
        config = tiny_config(tiny_model_dir, tiny_data, tmp_path / f"w{workers}", steps=6, eval={"every": 3},
                             runtime={"num_workers": workers})
        train(run_config(config, tmp_path / f"w{workers}.json"))
        finals[workers] = weights(tmp_path / f"w{workers}" / "final")
    assert all(torch.equal(finals[0][k], finals[2][k]) for k in finals[0])
    before = read_log(tmp_path / "w2")
    train(run_config(merge(config, {"runtime": {"num_workers": 0}}), tmp_path / "again.json"), resume=True)
    assert read_log(tmp_path / "w2") == before  # the final evaluation is redone, not appended twice
    assert all(torch.equal(finals[2][k], v) for k, v in weights(tmp_path / "w2" / "final").items())


def test_pairs_train_beside_another_task(tiny_model_dir, tiny_data, tmp_path):
    """The pairs type in the multi-task trainer: in-batch negatives, its dev metric (MRR@10 over the
    dev set) logged and equal to evaluating the saved model."""
    from minibert.data import read_pairs_tsv

    pairs = [("a man plays a guitar", "someone plays music"), ("a cat sleeps", "an animal rests"),
             ("stocks fell", "markets dropped"), ("kids play soccer", "children play football"),
             ("it is raining", "the weather is wet"), ("a chef cooks", "food is prepared")]
    (tmp_path / "pairs.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in pairs))
    pairs = {"name": "retrieval", "type": "pairs", "train": str(tmp_path / "pairs.tsv"),
             "dev": str(tmp_path / "pairs.tsv")}
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", steps=6, eval={"every": 0}, optim={"lr": 3e-3})
    config["tasks"] = [config["tasks"][1], pairs]
    result = train(run_config(config, tmp_path / "c.json"))
    dev = result["best"]["metrics"]["retrieval"]
    final = MultiTaskModel.load(tmp_path / "run" / "final")
    assert dev == pytest.approx(evaluate_task(final, "retrieval", read_pairs_tsv(tmp_path / "pairs.tsv")))
    assert set(dev) == {"mrr@10", "recall@1", "recall@10"}
    losses = [r["loss"]["retrieval"] for r in read_log(tmp_path / "run") if "retrieval" in r.get("loss", {})]
    assert len(losses) == 3


def test_a_task_added_to_a_trained_model_keeps_the_old_heads(tiny_model_dir, tiny_data, tmp_path):
    """heads_from: the tasks a saved model has start from its heads; a new task starts fresh."""
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "three", steps=4, eval={"every": 0})
    five = config["tasks"]
    config["tasks"] = [t for t in five if t["name"] in ("sts", "topic", "sentiment")]
    train(run_config(config, tmp_path / "c.json"))
    first = tmp_path / "three" / "final"
    config = merge(config, {"output_dir": str(tmp_path / "five"), "tasks": five, "model": str(first), "seed": 7,
                            "encoder": {"heads_from": str(first), "freeze": ["head:topic", "head:sentiment"]},
                            "sampling": {"finish_with": ["ner"], "finish_steps": 4}})  # fresh heads differ
    train(run_config(config, tmp_path / "c2.json"))
    before, after = load_file(first / "heads.safetensors"), load_file(tmp_path / "five" / "final" / "heads.safetensors")
    assert before.keys() < after.keys() and any(k.startswith("ner.") for k in after)
    assert all(torch.equal(before[k], after[k]) for k in before)  # loaded, then frozen
    assert not torch.equal(load_file(first / "model.safetensors")["encoder.layer.0.output.dense.weight"],
                           load_file(tmp_path / "five" / "final" / "model.safetensors")[
                               "encoder.layer.0.output.dense.weight"])  # the encoder went on training
    topic = next(t for t in five if t["name"] == "topic")
    topic["labels"] = ["World", "Sports", "Business", "Sci/Tech"]  # another order: the saved head would lie
    with pytest.raises(ValueError, match="task 'topic' has labels"):
        train(run_config(config, tmp_path / "c3.json"))
    topic["labels"], topic["head"] = None, {"hidden_layer": True}
    with pytest.raises(ValueError, match=r"\(task 'topic'\) does not match this run's configuration: "
                                         r"missing 4 tensors: topic.hidden.0.weight"):
        train(run_config(config, tmp_path / "c4.json"))
    config = merge(config, {"tasks": [t for t in five if t["name"] == "ner"], "encoder": {"freeze": []},
                            "sampling": {"finish_with": [], "finish_steps": 0}})
    with pytest.raises(ValueError, match="has no head for any of this run's tasks"):
        train(run_config(config, tmp_path / "c5.json"))


def test_random_init_draws_the_encoder_afresh(tiny_model_dir, tiny_data, tmp_path):
    from minibert.model import BertModel

    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", steps=2, seed=3, eval={"every": 0},
                         encoder={"init": "random", "freeze": ["encoder"]})
    train(run_config(config, tmp_path / "c.json"))
    pretrained = BertModel.from_pretrained(tiny_model_dir)
    torch.manual_seed(3)
    pretrained.init_weights()  # the same draws, in the same order, as the run's
    final = BertModel.from_pretrained(tmp_path / "run" / "final")
    for name, tensor in pretrained.state_dict().items():
        torch.testing.assert_close(final.state_dict()[name], tensor, atol=0, rtol=0, msg=name)
    with pytest.raises(ValueError, match="encoder.init must be one of"):
        load_config(None, ["encoder.init=zeros"], base=config)
