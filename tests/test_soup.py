"""Model soups: weight averaging of runs from one checkpoint, and the greedy choice on dev."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config

from minibert.data import read_sts_tsv
from minibert.multitask import MultiTaskModel
from minibert.train import load_config, train
from minibert.train.soup import average_weights, dev_score, greedy_soup, save_soup


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tiny_data, tmp_path_factory):
    """Three short runs of the STS and topic tasks that differ only in seed."""
    root = tmp_path_factory.mktemp("soup-runs")
    folders = []
    for seed in (1, 2, 3):
        config = tiny_config(tiny_model_dir, tiny_data, root / f"seed{seed}", steps=4, eval_every=0, seed=seed)
        config["tasks"] = config["tasks"][:2]
        (root / f"c{seed}.json").write_text(json.dumps(config))
        train(load_config(root / f"c{seed}.json"))
        folders.append(root / f"seed{seed}" / "final")
    return folders


def test_average_is_the_mean_of_every_tensor(runs):
    models = [MultiTaskModel.load(f) for f in runs]
    soup = average_weights(models, [str(f) for f in runs])
    states = [m.state_dict() for m in models]
    for key, tensor in soup.state_dict().items():
        torch.testing.assert_close(tensor, sum(s[key] for s in states) / 3, msg=lambda m, k=key: f"{k}: {m}")
    assert not torch.equal(states[0]["heads.topic.out.weight"], states[1]["heads.topic.out.weight"])
    same = average_weights([models[0], models[0]])
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), states[0].values(), strict=True))


def test_average_refuses_models_with_other_tasks(runs, tiny_model_dir, tiny_data, tmp_path):
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "other", steps=1, eval_every=0)
    config["tasks"] = config["tasks"][:1]
    (tmp_path / "c.json").write_text(json.dumps(config))
    train(load_config(tmp_path / "c.json"))
    models = [MultiTaskModel.load(runs[0]), MultiTaskModel.load(tmp_path / "other" / "final")]
    with pytest.raises(ValueError, match="other-run: its tasks differ"):
        average_weights(models, ["first-run", "other-run"])


def test_greedy_soup_never_lowers_the_dev_score(runs, tiny_data, tmp_path):
    dev = read_sts_tsv(tiny_data / "sts.tsv")
    models = {str(f): MultiTaskModel.load(f) for f in runs}
    soup, log = greedy_soup(models, "sts", dev)
    alone = {name: dev_score(model, "sts", dev) for name, model in models.items()}
    assert log[0]["model"] == max(alone, key=alone.get) and log[0]["kept"]
    assert [row["dev"] for row in log] == sorted(alone.values(), reverse=True)
    kept = [row for row in log if row["kept"]]
    assert dev_score(soup, "sts", dev) == pytest.approx(kept[-1]["soup_dev"], abs=1e-6)
    assert kept[-1]["soup_dev"] >= max(alone.values())
    save_soup(soup, log, tmp_path / "soup", "sts", str(tiny_data / "sts.tsv"))
    loaded = MultiTaskModel.load(tmp_path / "soup")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), soup.state_dict().values(), strict=True))
    assert json.loads((tmp_path / "soup" / "soup.json").read_text())["log"] == log
