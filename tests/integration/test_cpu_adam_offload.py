"""ZeRO-Offload's optimizer: with the optimizer offloaded the trainer builds DeepSpeed's CPU Adam, whose
C++ op DeepSpeed compiles on first use (about 2-4 min on 2 cores, then cached in
~/.cache/torch_extensions): a build step, so this sits in the integration layer; the rest of the
optimizer tests are in tests/unit/test_optim.py."""

import torch

from training.config import OptimConfig
from training.model import BertConfig, BertForPreTraining
from training.models import preset_fields
from training.optim import build_optimizer


def tiny_bert() -> BertForPreTraining:
    torch.manual_seed(0)
    return BertForPreTraining(BertConfig(vocab_size=100, **preset_fields("tiny")))


def test_offload_uses_deepspeed_cpu_adam():
    # Compiles DeepSpeed's CPU Adam op the first time (~2 min, cached in ~/.cache/torch_extensions).
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    model = tiny_bert()
    opt = build_optimizer(model, OptimConfig(), offload_optimizer=True)
    assert isinstance(opt, DeepSpeedCPUAdam)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    out = model(
        torch.randint(5, 100, (2, 8)),
        masked_lm_positions=torch.tensor([[1], [2]]),
        masked_lm_labels=torch.tensor([[7], [9]]),
        next_sentence_label=torch.tensor([0, 1]),
    )
    out.loss.backward()
    before = model.bert.pooler.dense.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, model.bert.pooler.dense.weight)
