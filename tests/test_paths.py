"""minibert.paths: the one place that builds a twin on another path, its rules, and the default path."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from minibert import BertConfig, BertModel, SentenceEncoder, paths
from minibert.paths import attention_kernels, check_path, convert, default_path, kernels, onednn
from minibert.paths import fast as fast_module
from minibert.paths.compiled import CompiledBertModel
from minibert.paths.fast import FastBertModel, Packing
from minibert.weights import fuse_qkv

SMALL = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                   max_position_embeddings=40)


# wider than the blocked kernel's block (onednn.BLOCK), and not a multiple of it
WIDE = BertConfig(vocab_size=60, hidden_size=200, num_hidden_layers=2, num_attention_heads=4, intermediate_size=400,
                  max_position_embeddings=40)


def small_batch():
    ids = torch.randint(1, 60, (3, 9))
    mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4, [1] * 2 + [0] * 7])
    return ids, mask


def test_a_twin_has_its_own_config_and_keeps_frozen_flags_device_dtype_and_mode():
    ref = BertModel(SMALL).train()
    ref.embeddings.requires_grad_(False)
    ref.blocks[1].ffn_out.bias.requires_grad_(False)
    for path in ("fast", "compiled") if paths.has_cpp_compiler() else ("fast",):
        twin = convert(ref, path)
        assert twin.path == path and twin.training
        twin.set_dropout(0.0)  # the twin's config is a copy: the original keeps its dropout
        assert ref.config.hidden_dropout_prob == 0.1 and ref.blocks[0].dropout.p == 0.1
        flags = {n: p.requires_grad for n, p in twin.named_parameters()}
        assert not flags["embeddings.word.weight"] and not flags["blocks.1.ffn_out.bias"]
        assert flags["blocks.1.ffn_out.weight"] and flags["blocks.0.ffn_in.weight"]
        assert twin.blocks[1].ffn_in.weight.data_ptr() == ref.blocks[1].ffn_in.weight.data_ptr()  # shared
    back = convert(convert(ref, "fast"), "reference")  # the three are views of the fused tensor
    assert type(back) is BertModel and not back.embeddings.word.weight.requires_grad
    assert back.config is not ref.config
    fast = convert(ref.to(torch.bfloat16).eval(), "fast")
    assert all(p.dtype == torch.bfloat16 for p in fast.parameters()) and not fast.training


def test_fusing_needs_query_key_and_value_alike():
    ref = BertModel(SMALL)
    ref.blocks[0].attention.key.weight.requires_grad_(False)
    with pytest.raises(ValueError, match=r"blocks.0.attention.qkv.weight: query, key and value must be all frozen"):
        convert(ref, "fast")


def test_a_fast_model_built_directly_starts_from_berts_initialisation():
    torch.manual_seed(0)
    ref = BertModel(SMALL)
    torch.manual_seed(0)
    fast = FastBertModel(SMALL)
    expected = fuse_qkv(ref.state_dict())
    assert fast.state_dict().keys() == expected.keys()
    for name, tensor in fast.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], atol=0, rtol=0, msg=name)
    assert fast.blocks[0].attention_out.bias.abs().max() == 0  # BERT's zero biases, not nn.Linear's default


def test_each_path_runs_the_reference_function():
    torch.manual_seed(1)
    ref = BertModel(SMALL).eval()
    ids, mask = small_batch()
    real = mask.bool()
    with torch.no_grad():
        expected = ref(ids, mask).last_hidden_state
        for path in ("fast", "compiled") if paths.has_cpp_compiler() else ("fast",):
            out = convert(ref, path)(ids, mask).last_hidden_state
            torch.testing.assert_close(out[real], expected[real], atol=1e-5, rtol=1e-4, msg=path)


def test_onednn_falls_back_to_f_linear_and_says_so_once(monkeypatch):
    """The private oneDNN op behind one function: when it fails, F.linear takes over, one warning is
    given, and the outputs still equal the reference path's."""
    torch.manual_seed(2)
    ref = BertModel(SMALL).eval()
    fast = convert(ref, "fast")
    ids, mask = small_batch()
    real = mask.bool()
    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("mkldnn: this CPU is not supported")

    monkeypatch.setattr(onednn, "ONEDNN_OP", broken)
    monkeypatch.setattr(onednn, "ONEDNN_FAILED", set())
    monkeypatch.setitem(kernels.CHOSEN, torch.float32, "onednn")
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        expected = ref(ids, mask).last_hidden_state
        out = fast(ids, mask).last_hidden_state
        again = fast(ids, mask).last_hidden_state
    assert len(calls) == 1 and onednn.ONEDNN_FAILED == {torch.float32}  # tried once, then not again
    assert [str(w.message) for w in caught if issubclass(w.category, onednn.KernelFallback)] == [
        "oneDNN's linear in torch.float32 failed (mkldnn: this CPU is not supported); the fast path falls back "
        "to the public torch functions"]
    torch.testing.assert_close(out[real], expected[real], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(again, out, atol=0, rtol=0)
    loss = fast.train()(ids, mask).last_hidden_state[real].square().sum()  # the backward falls back too
    loss.backward()
    assert fast.blocks[0].attention.qkv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("attention", ["products", "sdpa"])
@pytest.mark.parametrize("dtype,kernel,float32_kernel", [
    (torch.float32, "blas", "blas"), (torch.float32, "onednn", "onednn"), (torch.float32, "blocked", "blocked"),
    (torch.bfloat16, "blas", "blas"), (torch.bfloat16, "onednn", "blas"), (torch.bfloat16, "upcast", "blas"),
    (torch.bfloat16, "upcast", "onednn"), (torch.bfloat16, "upcast", "blocked")])
def test_every_cpu_kernel_gives_the_reference_outputs_and_gradients(monkeypatch, dtype, kernel, float32_kernel,
                                                                    attention):
    """Whichever kernels the measurement picks on a CPU, forward and backward are the reference path's (with
    the blocked kernel, on layers wider than a block)."""
    monkeypatch.setitem(kernels.CHOSEN, dtype, kernel)
    monkeypatch.setitem(kernels.CHOSEN, torch.float32, float32_kernel)
    monkeypatch.setitem(attention_kernels.ATTENTION_CHOSEN, dtype, attention)
    ran, attend = [], getattr(attention_kernels, f"{attention}_attention")
    monkeypatch.setattr(fast_module, f"{attention}_attention", lambda *args: ran.append(1) or attend(*args))
    torch.manual_seed(3)
    config = WIDE if "blocked" in (kernel, float32_kernel) else SMALL
    ref = BertModel(config).eval()
    with torch.no_grad():  # biases away from BERT's zero init, so that a kernel that drops one shows
        for module in ref.modules():
            if isinstance(module, torch.nn.Linear):
                module.bias.normal_(0, 0.1)
    ref = ref.to(dtype)
    fast = convert(ref, "fast")
    ids, mask = small_batch()
    real = mask.bool()
    tolerance = {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 0.05, "rtol": 0.02}
    probe = torch.randn(int(real.sum()), config.hidden_size)  # (the square of a LayerNorm's output sums to a constant)
    outs, grads = {}, {}
    for name, model in (("ref", ref), ("fast", fast)):
        model.zero_grad()
        out = model(ids, mask).last_hidden_state
        outs[name] = out[real].float()
        (out[real].float() * probe).sum().backward()
        grads[name] = [model.blocks[1].ffn_in.weight.grad.float(), model.blocks[1].ffn_in.bias.grad.float(),
                       model.blocks[0].attention_out.bias.grad.float(), model.embeddings.word.weight.grad.float()]
    assert len(ran) == config.num_hidden_layers  # the attention asked for ran in every block
    torch.testing.assert_close(outs["fast"], outs["ref"], **tolerance)
    for fast_grad, ref_grad in zip(grads["fast"], grads["ref"], strict=True):
        scale = float(ref_grad.abs().max())  # tolerances relative to the gradient's size
        torch.testing.assert_close(fast_grad, ref_grad, atol=tolerance["atol"] * 10 * scale,
                                   rtol=tolerance["rtol"] * 10)


def test_cpu_attention_is_measured_once_per_dtype_and_can_be_forced(monkeypatch):
    timings = {attention_kernels.products_attention: 1.0, attention_kernels.sdpa_attention: 0.85}
    monkeypatch.setattr(kernels, "seconds", lambda kernel, args: timings[kernel])
    monkeypatch.setattr(attention_kernels, "ATTENTION_CHOSEN", {})
    monkeypatch.setitem(kernels.CHOSEN, torch.float32, "blas")  # bf16 attention asks for bf16's linear kernel,
    monkeypatch.setitem(kernels.CHOSEN, torch.bfloat16, "blas")  # which asks for float32's
    monkeypatch.delenv("MINIBERT_CPU_ATTENTION", raising=False)
    assert attention_kernels.attention_kernel(torch.float32) == "products"  # 15% faster is within the noise
    timings[attention_kernels.sdpa_attention] = 0.5
    assert attention_kernels.attention_kernel(torch.float32) == "products"  # measured once: the first answer stays
    assert attention_kernels.attention_kernel(torch.bfloat16) == "sdpa"  # each dtype measured on its own
    monkeypatch.setattr(attention_kernels, "ATTENTION_CHOSEN", {})
    monkeypatch.setenv("MINIBERT_CPU_ATTENTION", "products")
    assert attention_kernels.attention_kernel(torch.bfloat16) == "products"
    monkeypatch.setenv("MINIBERT_CPU_ATTENTION", "flash")
    with pytest.raises(ValueError, match="MINIBERT_CPU_ATTENTION='flash': it must be 'products' or 'sdpa'"):
        attention_kernels.attention_kernel(torch.float32)


@pytest.mark.parametrize("kernel", ["upcast", "blas"])
def test_bf16_attention_products_run_in_float32_where_bf16_linears_do(monkeypatch, kernel):
    monkeypatch.setitem(kernels.CHOSEN, torch.bfloat16, kernel)
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=generator).bfloat16() for _ in range(3))
    keep = torch.tensor([[1] * 7, [1] * 4 + [0] * 3], dtype=torch.bool)[:, None, None, :]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as in training; it must not turn the products back
        got = attention_kernels.products_attention(q, k, v, keep)
    scores = (q.float() @ k.float().transpose(-2, -1) * 8 ** -0.5).masked_fill(~keep, -1e30)
    in_float32 = (scores.softmax(-1) @ v.float()).bfloat16()
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, in_float32) == (kernel == "upcast")


@pytest.mark.parametrize("length", [9, 16, 21])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_written_out_attention_equals_the_formula(length, masked, with_bias):
    """The fast path's written-out attention (keys padded to whole vectors, the mask added in the scaled
    product) against softmax(q k^T / sqrt(D) + bias, masked) v in float64; under dropout it draws the same
    mask as the reference's probabilities of shape (B, H, L, L), so the keys are not padded there."""
    generator = torch.Generator().manual_seed(length)
    q, k, v = (torch.randn(3, 2, length, 8, generator=generator) for _ in range(3))
    keep = None
    if masked:
        keep = torch.ones(3, 1, 1, length, dtype=torch.bool)
        keep[1, ..., length - 3:] = keep[2, ..., 2:] = False
    bias = torch.randn(1, 2, length, length, generator=generator) if with_bias else None
    scores = q.double() @ k.double().transpose(-2, -1) * 8 ** -0.5 + (0 if bias is None else bias.double())
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    probabilities = scores.softmax(-1)
    got = attention_kernels.products_attention(q, k, v, keep, bias)
    torch.testing.assert_close(got.double(), probabilities @ v.double(), atol=1e-6, rtol=1e-6)
    torch.manual_seed(1)
    got = attention_kernels.products_attention(q, k, v, keep, bias, dropout_p=0.5)
    torch.manual_seed(1)
    dropped = torch.nn.functional.dropout(probabilities.float(), p=0.5).double()
    torch.testing.assert_close(got.double(), dropped @ v.double(), atol=1e-5, rtol=1e-5)


def test_the_attention_term_is_made_once_per_forward(monkeypatch):
    """Every layer of a forward has the same mask (and MPNet's bias): the written-out attention makes their
    term on the scores in the first layer, the others reuse it, and the next forward makes its own."""
    made = []
    real = attention_kernels.scores_term
    monkeypatch.setattr(attention_kernels, "scores_term", lambda *args: made.append(args[2]) or real(*args))
    monkeypatch.setitem(attention_kernels.ATTENTION_CHOSEN, torch.float32, "products")
    torch.manual_seed(0)
    ref = BertModel(SMALL).eval()  # two layers
    model = convert(ref, "fast")
    ids, mask = small_batch()
    with torch.no_grad():
        for rows, length in ((3, 9), (2, 5)):
            got = model(ids[:rows, :length], mask[:rows, :length]).last_hidden_state
            expected = ref(ids[:rows, :length], mask[:rows, :length]).last_hidden_state
            real_rows = mask[:rows, :length].bool()
            torch.testing.assert_close(got[real_rows], expected[real_rows], atol=1e-5, rtol=1e-4)
    assert made == [(3, 4, 9), (2, 4, 5)]


def test_pool_false_skips_the_pooler_on_every_path_and_encoders_never_run_it(monkeypatch, minilm_dir, sentences):
    torch.manual_seed(1)
    ref = BertModel(SMALL).eval()
    ids, mask = small_batch()
    for path in ("reference", "fast", "int8", *(("compiled",) if paths.has_cpp_compiler() else ())):
        model = convert(ref, path)
        with torch.no_grad():
            full, bare = model(ids, mask), model(ids, mask, pool=False)
        assert full.pooler_output is not None and bare.pooler_output is None, path
        assert torch.equal(bare.last_hidden_state, full.last_hidden_state), path
    encoder = SentenceEncoder.from_pretrained(minilm_dir)
    expected = encoder.encode(sentences)
    assert encoder.bert.pooler is not None  # the folder has one; SBERT's pooling never reads it
    monkeypatch.setattr(type(encoder.bert.pooler), "forward", lambda *args: pytest.fail("the pooler ran"))
    np.testing.assert_array_equal(encoder.encode(sentences), expected)


def test_written_out_attention_adds_a_float32_bias_in_float32_under_autocast(monkeypatch):
    """MPNet's bias is a float32 parameter: under bf16 autocast model.py adds it to the bf16 scores in float32,
    so softmax and dropout run in float32; the fast path must not round the bias to bf16 first."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, generator=generator).bfloat16() for _ in range(3))
    bias = torch.randn(1, 3, 9, 9, generator=generator, requires_grad=True)
    softmax_dtypes = []
    real_softmax = torch.nn.functional.softmax
    monkeypatch.setattr(attention_kernels.F, "softmax",
                        lambda x, **kw: softmax_dtypes.append(x.dtype) or real_softmax(x, **kw))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attention_kernels.products_attention(q, k, v, None, bias)
    got.float().sum().backward()
    assert softmax_dtypes == [torch.float32] and bias.grad is not None
    softmax_dtypes.clear()
    monkeypatch.setitem(kernels.CHOSEN, torch.bfloat16, "blas")  # (not "upcast": that runs all in float32)
    attention_kernels.products_attention(q, k, v, None, bias.detach().bfloat16())  # a bf16 MPNet: as transformers
    attention_kernels.products_attention(q, k, v, None, None)  # no bias: float32 scores, as SDPA keeps them
    assert softmax_dtypes == [torch.bfloat16, torch.float32]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("masked", [False, True])
def test_half_precision_written_out_attention_is_as_accurate_as_sdpa(monkeypatch, masked, dtype):
    """Without a bias the reference's attention is SDPA, whose fused kernel keeps the scores in float32. The
    written-out products must be as close to exact attention: scores rounded to bf16 (up to 1/32 at 10, so a
    probability off by 3%) were 2.6x as far on average and 4.9x at most, and put a fast bf16 encode outside its
    tolerance (tests/differential.py, draw 52000905)."""
    monkeypatch.setitem(kernels.CHOSEN, torch.bfloat16, "blas")  # (not "upcast": that runs all in float32)
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 6, 21, 32, generator=generator).mul(2).to(dtype) for _ in range(3))
    keep = None
    if masked:
        keep = torch.ones(4, 1, 1, 21, dtype=torch.bool)
        keep[1, ..., 15:] = keep[3, ..., 4:] = False
    exact = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=keep)
    sdpa_error = (attention_kernels.sdpa_attention(q, k, v, keep).double() - exact).abs()
    got = attention_kernels.products_attention(q, k, v, keep, terms={})
    assert got.dtype == dtype
    error = (got.double() - exact).abs()  # (both end rounded to bf16; here the probabilities are rounded too)
    assert error.mean() <= 1.6 * sdpa_error.mean() and error.max() <= 2.5 * sdpa_error.max()


def test_a_bias_or_attention_dropout_runs_the_written_out_products(monkeypatch):
    """SDPA is not handed MPNet's bias (it rounds that sum differently) nor dropout (it draws its own mask):
    those run as the reference runs them, whatever was measured."""
    monkeypatch.setitem(attention_kernels.ATTENTION_CHOSEN, torch.float32, "sdpa")
    ran = []
    monkeypatch.setattr(fast_module, "sdpa_attention",
                        lambda *args: ran.append("sdpa") or attention_kernels.sdpa_attention(*args))
    monkeypatch.setattr(fast_module, "products_attention",
                        lambda *args: ran.append("products") or attention_kernels.products_attention(*args))
    model = convert(BertModel(SMALL), "fast")
    ids, mask = small_batch()
    model.eval()(ids, mask)
    assert ran == ["sdpa"] * 2
    ran.clear()
    model.train()(ids, mask)  # attention dropout 0.1
    assert ran == ["products"] * 2
    ran.clear()
    model.eval().blocks[0](torch.randn(16, 32), Packing.from_mask(mask), bias=torch.zeros(1, 4, 9, 9))
    assert ran == ["products"]


def test_the_refusal_rules(monkeypatch):
    with pytest.raises(ValueError, match=r"path must be one of \('reference', 'fast', 'int8', 'compiled'\)"):
        check_path("turbo", "cpu", torch.float32)
    with pytest.raises(ValueError, match="path 'int8' runs on the CPU in float32, not float16 on cpu"):
        check_path("int8", "cpu", torch.float16)
    with pytest.raises(ValueError, match="path 'int8' runs on the CPU in float32, not float32 on cuda"):
        check_path("int8", "cuda", torch.float32)
    with pytest.raises(ValueError, match="path 'int8' is for inference"):
        check_path("int8", "cpu", torch.float32, training=True)
    monkeypatch.setattr(paths.shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match="path 'compiled' on the CPU needs a C\\+\\+ compiler"):
        check_path("compiled", "cpu", torch.float32)
    check_path("compiled", "cuda", torch.float32)  # on CUDA, inductor writes Triton kernels


def test_the_default_path():
    assert default_path("cpu") == "fast"
    assert default_path("cuda:1") == "reference"  # until a GPU run holds the reworked fast path to it there
    assert default_path("mps") == "reference"  # nothing holds the fast path to the reference there


def test_encoders_run_the_default_path_unless_told(minilm_dir, sentences):
    encoder = SentenceEncoder.from_pretrained(minilm_dir)
    assert encoder.path == "fast" and isinstance(encoder.bert, FastBertModel)
    reference = SentenceEncoder.from_pretrained(minilm_dir, path="reference")
    assert reference.path == "reference" and type(reference.bert) is BertModel
    np.testing.assert_allclose(encoder.encode(sentences), reference.encode(sentences), atol=1e-6, rtol=0)
    assert reference.to_path("reference") is reference
    compiled = reference.to_path("compiled", bucket=16) if paths.has_cpp_compiler() else None
    assert compiled is None or (isinstance(compiled.bert, CompiledBertModel) and compiled.bert.bucket == 16)
    int8 = encoder.to_path("int8")
    with pytest.raises(ValueError, match="path 'int8' runs on the CPU in float32, not bfloat16"):
        int8.encode(["a"], dtype=torch.bfloat16)  # refused before anything moves
    with pytest.raises(ValueError, match="path 'int8' runs on the CPU in float32, not bfloat16"):
        encoder.encode(["a"], dtype=torch.bfloat16, path="int8")
    assert {p.dtype for p in int8.parameters()} == {p.dtype for p in encoder.parameters()} == {torch.float32}


def test_loading_and_encoding_leave_torch_dynamo_unimported(minilm_dir):
    """torch._dynamo takes a second or more to import; only the compiled path needs it, so loading a
    model (built on the meta device) and encoding on the other paths must not pull it in."""
    import subprocess
    import sys

    script = ("import sys; from minibert import SentenceEncoder; e = SentenceEncoder.from_pretrained(sys.argv[1]); "
              "[e.encode(['a b c'], path=p) for p in ('fast', 'reference', 'int8')]; "
              "print(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))")
    result = subprocess.run([sys.executable, "-c", script, str(minilm_dir)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_block_adds_its_residuals_inside_the_products_in_eval_only_where_nothing_is_dropped(monkeypatch):
    """In eval the fast block hands x to its output layers (FastLinear, Int8Linear) to add inside their products;
    with dropout on it adds after, as the reference; a sublayer that takes no residual (swapped in by hand)
    gets none, and the block adds after it."""
    torch.manual_seed(0)
    reference = BertModel(SMALL).eval()  # hidden dropout 0.1
    ids, mask = small_batch()
    real = mask.bool()
    with torch.no_grad():
        expected = reference(ids, mask).last_hidden_state[real]
        for path, tolerance in (("fast", {"atol": 2e-5, "rtol": 1e-4}), ("int8", {"atol": 0.1, "rtol": 0.1})):
            model = convert(reference, path)
            handed = []
            for block in model.blocks:
                for layer in (block.attention_out, block.ffn_out):
                    layer.register_forward_pre_hook(lambda module, args, kwargs, handed=handed:
                                                    handed.append("residual" in kwargs), with_kwargs=True)
            torch.testing.assert_close(model(ids, mask).last_hidden_state[real], expected, **tolerance)
            assert handed == [True] * 2 * SMALL.num_hidden_layers
            handed.clear()
            if path == "fast":
                model.train()(ids, mask)  # dropout between each output layer and the sum: added after
                assert handed == [False] * 2 * SMALL.num_hidden_layers
        model = convert(reference, "fast").eval()
        for block in model.blocks:  # plain nn.Linear layers swapped in, with the same weights
            plain = torch.nn.Linear(block.ffn_out.in_features, block.ffn_out.out_features)
            plain.load_state_dict(block.ffn_out.state_dict())
            block.ffn_out = plain
        torch.testing.assert_close(model(ids, mask).last_hidden_state[real], expected, atol=2e-5, rtol=1e-4)

