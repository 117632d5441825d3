"""
train.py: a single-file GPT pretraining run with a fixed wall-clock budget.

    python train.py                              # standard track (CUDA)
    AUTORESEARCH_PROFILE=smoke python train.py   # CPU-sized smoke track

Run `python prepare.py` (same profile) once before. This is the file agents edit: the
hyperparameter block below, and anything else in the model or optimizer. prepare.py (data,
tokenizer, the track's constants and the metric) is never edited. The run trains for the
track's TIME_BUDGET seconds of training time (the first steps, which compile, are not
counted), evaluates val_bpb with prepare.evaluate_bpb, and prints a summary block that is the
only interface to the supervisor. A NaN or exploding loss prints FAIL and exits 1.

Model: GPT with rotary embeddings, QK-norm, ReLU^2 MLP, value embeddings (with an
input-dependent gate) on alternating layers, sliding-window attention by a pattern string,
learnable residual / x0 mixing scalars per layer, and a tanh logit softcap. Optimizer: Muon
(Nesterov momentum, Newton-Schulz orthogonalisation) for the block matrices, AdamW for
embeddings, value embeddings, the head and the scalars; learning rates follow warmup /
constant / warmdown to FINAL_LR_FRAC on progress = training time / budget.

Tracks. The hyperparameter block holds the values for the standard track (H100, sequence
2048). The smoke track (CPU) uses the same constants through the profile's scale factors
from prepare.py: model width and head dim are divided by WIDTH_DIVISOR and the rows of a
micro-step (DEVICE_BATCH_SIZE) by BATCH_DIVISOR, while the number of gradient-accumulation
steps, TOTAL_BATCH_SIZE // (DEVICE_BATCH_SIZE * REFERENCE_SEQ_LEN), is the same on every
track. Every constant of the block therefore changes the smoke run too.

Environment: AUTORESEARCH_PROFILE and AUTORESEARCH_CACHE (read by prepare.py) pick the track
and the prepared data; AUTORESEARCH_COMPILE=0 turns torch.compile off and
AUTORESEARCH_ATTENTION=sdpa skips FlashAttention-3 (both for debugging on CUDA).
"""

import time

T_START = time.time()  # total_seconds counts from here

import contextlib  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402

# CPU threads sleep instead of spinning while they wait: on a machine shared with other
# processes spinning OpenMP threads slow every step down many times over.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # prepare.py sits next to us
import prepare  # noqa: E402
from prepare import (  # noqa: E402
    BATCH_DIVISOR,
    EVAL_TOKENS,
    MAX_SEQ_LEN,
    REFERENCE_SEQ_LEN,
    TIME_BUDGET,
    WIDTH_DIVISOR,
    Tokenizer,
    evaluate_bpb,
    make_dataloader,
)

# =============================================================================
# Hyperparameters (agents edit this block: plain literals or simple expressions)
# =============================================================================
ASPECT_RATIO = 64  # model width = DEPTH * ASPECT_RATIO channels (rounded up to whole heads)
HEAD_DIM = 128  # channels per attention head
WINDOW_PATTERN = "SSSL"  # per-layer attention window, repeated: S = half context, L = full
TOTAL_BATCH_SIZE = 2**19  # tokens per optimizer step (gradient accumulation fills it)
EMBEDDING_LR = 0.6  # AdamW learning rate of token and value embeddings
UNEMBEDDING_LR = 0.004  # AdamW learning rate of the output head
MATRIX_LR = 0.04  # Muon learning rate of the transformer block matrices
SCALAR_LR = 0.5  # AdamW learning rate of the per-layer residual / x0 mixing scalars
WEIGHT_DECAY = 0.2  # decoupled weight decay of the Muon matrices (scaled by the LR)
ADAM_BETAS = (0.8, 0.95)  # AdamW (beta1, beta2)
WARMUP_RATIO = 0.0  # fraction of the budget spent warming the learning rate up from 0
WARMDOWN_RATIO = 0.5  # fraction of the budget at the end spent decaying the learning rate
FINAL_LR_FRAC = 0.0  # learning rate at the end of warmdown, as a fraction of the peak
LOGIT_SOFTCAP = 15.0  # logits are squashed to (-cap, cap) with cap * tanh(logits / cap)
DEPTH = 8  # number of transformer layers
DEVICE_BATCH_SIZE = 128  # sequences per forward/backward pass (per micro-step)
SEED = 42  # seed of parameter init and training data order
# =============================================================================
# Setup: device, precision, derived sizes
# =============================================================================

# A confirmation run repeats the same code with another seed: AUTORESEARCH_SEED overrides SEED
# without changing the file (and so without changing the experiment's code hash).
SEED = int(os.environ.get("AUTORESEARCH_SEED", SEED))
# Reproducibility checks (the same run inside and outside a sandbox, replication) need a run
# that does not depend on the machine's speed: AUTORESEARCH_MAX_STEPS=N trains exactly N steps
# with the schedule driven by steps instead of time. Never set by a normal run.
MAX_STEPS = int(os.environ.get("AUTORESEARCH_MAX_STEPS", "0") or 0)  # steps; 0 = time budget
torch.manual_seed(SEED)
random.seed(SEED)
CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
if CUDA:
    torch.cuda.manual_seed_all(SEED)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    AUTOCAST = torch.amp.autocast(device_type="cuda", dtype=torch.bfloat16)
else:
    if prepare.PROFILE.name != "smoke":
        print(f"train.py: the {prepare.PROFILE.name} track needs a CUDA GPU; on CPU run the "
              "smoke track: AUTORESEARCH_PROFILE=smoke python prepare.py && "
              "AUTORESEARCH_PROFILE=smoke python train.py", file=sys.stderr)
        sys.exit(1)
    AUTOCAST = contextlib.nullcontext()
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():  # set by a supervisor sharing the CPU
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
    else:
        try:
            torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
        except AttributeError:  # no sched_getaffinity (macOS)
            torch.set_num_threads(max(1, os.cpu_count() or 1))
USE_COMPILE = CUDA and os.environ.get("AUTORESEARCH_COMPILE", "1") != "0"
EXCLUDED_STEPS = 10 if CUDA else 1  # first steps (compilation, warmup) not counted in budget

head_dim = max(8, HEAD_DIM // WIDTH_DIVISOR)
n_head = max(1, math.ceil(DEPTH * ASPECT_RATIO / WIDTH_DIVISOR / head_dim))
model_dim = n_head * head_dim
if TOTAL_BATCH_SIZE % (DEVICE_BATCH_SIZE * REFERENCE_SEQ_LEN) != 0:
    print(f"train.py: TOTAL_BATCH_SIZE {TOTAL_BATCH_SIZE} must be a multiple of "
          f"DEVICE_BATCH_SIZE * {REFERENCE_SEQ_LEN} = {DEVICE_BATCH_SIZE * REFERENCE_SEQ_LEN} "
          "(tokens per step = gradient-accumulation steps x rows x sequence length)",
          file=sys.stderr)
    sys.exit(1)
grad_accum = TOTAL_BATCH_SIZE // (DEVICE_BATCH_SIZE * REFERENCE_SEQ_LEN)  # same on every track
device_batch = max(1, DEVICE_BATCH_SIZE // BATCH_DIVISOR)  # rows per micro-step on this track
batch_tokens = grad_accum * device_batch * MAX_SEQ_LEN  # tokens per optimizer step
if set(WINDOW_PATTERN) - {"S", "L"} or not WINDOW_PATTERN:
    print(f"train.py: WINDOW_PATTERN {WINDOW_PATTERN!r} may only hold 'S' and 'L'",
          file=sys.stderr)
    sys.exit(1)

# =============================================================================
# Attention kernels
# =============================================================================


def _load_fa3():
    """FlashAttention-3 from the `kernels` package on Hopper; None elsewhere or if missing."""
    if not CUDA or torch.cuda.get_device_capability() != (9, 0):
        return None
    if os.environ.get("AUTORESEARCH_ATTENTION", "").lower() == "sdpa":
        return None
    try:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from kernels import get_kernel

        return get_kernel("varunneal/flash-attention-3").flash_attn_interface
    except Exception as exc:  # any failure (not installed, offline, ABI): use SDPA instead
        print(f"attention: FlashAttention-3 unavailable ({type(exc).__name__}: {exc}); "
              "using PyTorch SDPA")
        return None


FA3 = _load_fa3()
ATTENTION = "fa3" if FA3 is not None else "sdpa"


def attend(q, k, v, window, mask):
    """Causal attention of (B, T, H, D) tensors; each query sees at most `window` keys."""
    T = q.size(1)
    if q.is_cuda:  # one dtype for the kernels: value embeddings and norms may leave fp32
        q, k, v = q.bfloat16(), k.bfloat16(), v.bfloat16()
    if FA3 is not None:
        left = window - 1 if window < T else -1
        out = FA3.flash_attn_func(q, k, v, causal=True, window_size=(left, 0))
        return out[0] if isinstance(out, tuple) else out
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if window >= T:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:T, :T])
    return y.transpose(1, 2)


# =============================================================================
# Model
# =============================================================================


def norm(x):
    return F.rms_norm(x, (x.size(-1),))


def rotate(x, cos, sin):
    """Rotary position embedding on (B, T, H, D): rotate channel pairs (i, i + D/2)."""
    half = x.size(-1) // 2
    a, b = x[..., :half], x[..., half:]
    return torch.cat((a * cos + b * sin, b * cos - a * sin), dim=-1)


class Attention(nn.Module):
    def __init__(self, dim, n_head, head_dim, value_embed):
        super().__init__()
        self.n_head, self.head_dim = n_head, head_dim
        self.c_q = nn.Linear(dim, dim, bias=False)
        self.c_k = nn.Linear(dim, dim, bias=False)
        self.c_v = nn.Linear(dim, dim, bias=False)
        self.c_proj = nn.Linear(dim, dim, bias=False)
        self.gate_ch = min(32, dim)
        self.ve_gate = nn.Linear(self.gate_ch, n_head, bias=False) if value_embed else None

    def forward(self, x, ve, cos, sin, window, mask):
        B, T, _ = x.shape
        shape = (B, T, self.n_head, self.head_dim)
        q, k, v = self.c_q(x).view(shape), self.c_k(x).view(shape), self.c_v(x).view(shape)
        if ve is not None:  # value embedding mixed in by a per-head, input-dependent gate
            gate = 2.0 * torch.sigmoid(self.ve_gate(x[..., :self.gate_ch]))
            v = v + gate.unsqueeze(-1) * ve.view(shape)
        q, k = norm(rotate(q, cos, sin)), norm(rotate(k, cos, sin))
        y = attend(q, k, v, window, mask)
        return self.c_proj(y.reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.c_fc = nn.Linear(dim, 4 * dim, bias=False)
        self.c_proj = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, dim, n_head, head_dim, value_embed):
        super().__init__()
        self.attn = Attention(dim, n_head, head_dim, value_embed)
        self.mlp = MLP(dim)

    def forward(self, x, ve, cos, sin, window, mask):
        x = x + self.attn(norm(x), ve, cos, sin, window, mask)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, depth, dim, n_head, head_dim, seq_len):
        super().__init__()
        self.vocab_size, self.depth, self.dim = vocab_size, depth, dim
        # value embeddings on alternating layers, always including the last one
        self.ve_layers = [i for i in range(depth) if i % 2 == (depth - 1) % 2]
        self.wte = nn.Embedding(vocab_size, dim)
        self.value_embeds = nn.ModuleDict(
            {str(i): nn.Embedding(vocab_size, dim) for i in self.ve_layers})
        self.blocks = nn.ModuleList(
            [Block(dim, n_head, head_dim, i in self.ve_layers) for i in range(depth)])
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        self.resid_lambdas = nn.Parameter(torch.ones(depth))
        self.x0_lambdas = nn.Parameter(torch.full((depth,), 0.1))
        # sliding windows by pattern; the last layer always sees the full context
        short = max(1, seq_len // 2)
        self.windows = [short if WINDOW_PATTERN[i % len(WINDOW_PATTERN)] == "S" else seq_len
                        for i in range(depth)]
        self.windows[-1] = seq_len
        pos = torch.arange(seq_len)
        for w in sorted(set(self.windows)):
            dist = pos[:, None] - pos[None, :]
            self.register_buffer(f"mask_{w}", (dist >= 0) & (dist < w), persistent=False)
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        angles = torch.outer(pos.float(), inv_freq)[:, None, :]  # (T, 1, D/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    @torch.no_grad()
    def init_weights(self):
        bound = 3**0.5 * self.dim**-0.5  # uniform with std dim^-0.5
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for emb in self.value_embeds.values():
            nn.init.normal_(emb.weight, std=1.0)
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.zeros_(block.attn.ve_gate.weight)
        self.resid_lambdas.fill_(1.0)
        self.x0_lambdas.fill_(0.1)

    def forward(self, idx, targets=None, reduction="mean"):
        T = idx.size(1)
        dtype = torch.bfloat16 if idx.is_cuda else torch.float32
        cos, sin = self.cos[:T].to(dtype), self.sin[:T].to(dtype)
        x = norm(self.wte(idx))
        x0 = x
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if i in self.ve_layers else None
            w = self.windows[i]
            x = block(x, ve, cos, sin, w, getattr(self, f"mask_{w}"))
        logits = self.lm_head(norm(x)).float()
        logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1),
                               reduction=reduction)

    def flops_per_token(self, seq_len):
        """Training FLOPs per token: 6 x matmul params + attention scores and mixing."""
        lookup = self.wte.weight.numel() + sum(e.weight.numel() for e in self.value_embeds.values())
        scalars = self.resid_lambdas.numel() + self.x0_lambdas.numel()
        matmul = sum(p.numel() for p in self.parameters()) - lookup - scalars
        attn = 0.0
        for w in self.windows:
            seen = sum(min(i + 1, w) for i in range(seq_len)) / seq_len
            attn += 12 * self.dim * seen
        return 6 * matmul + attn


# =============================================================================
# Optimizer: Muon for block matrices, AdamW for the rest
# =============================================================================

NS_COEFFS = (3.4445, -4.7750, 2.0315)  # quintic Newton-Schulz iteration


def orthogonalize(g, steps=5):
    """Approximate U V^T of each matrix in the (n, rows, cols) stack g (Newton-Schulz)."""
    a, b, c = NS_COEFFS
    x = g.bfloat16() if g.is_cuda else g.float()
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = x @ x.mT
        x = a * x + (b * A + c * (A @ A)) @ x
    return x.mT if tall else x


ORTHO = torch.compile(orthogonalize) if USE_COMPILE else orthogonalize


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum whose update is orthogonalised; same-shape matrices are
    stacked so each shape group costs one batched Newton-Schulz iteration."""

    def __init__(self, params, lr, momentum=0.95, weight_decay=0.0, ns_steps=5):
        by_shape = {}
        for p in params:
            by_shape.setdefault(tuple(p.shape), []).append(p)
        groups = [{"params": ps} for _, ps in sorted(by_shape.items())]
        super().__init__(groups, {"lr": lr, "momentum": momentum,
                                  "weight_decay": weight_decay, "ns_steps": ns_steps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            ps = group["params"]
            g = torch.stack([p.grad for p in ps])
            state = self.state[ps[0]]
            if "momentum" not in state:
                state["momentum"] = torch.zeros_like(g)
            buf, mu = state["momentum"], group["momentum"]
            buf.lerp_(g, 1 - mu)
            update = ORTHO(g.lerp_(buf, mu), group["ns_steps"])  # Nesterov look-ahead
            rows, cols = ps[0].shape
            lr = group["lr"] * max(1.0, rows / cols) ** 0.5
            decay = 1.0 - group["lr"] * group["weight_decay"]
            for p, u in zip(ps, update.unbind(0), strict=True):
                p.mul_(decay).add_(u.to(p.dtype), alpha=-lr)
        return loss


def build_optimizers(model):
    matrices = [p for p in model.blocks.parameters() if p.ndim == 2]
    scale = (model.dim / 768) ** -0.5  # AdamW rates were tuned at width 768
    embeds = [model.wte.weight] + [e.weight for e in model.value_embeds.values()]
    adam_groups = [
        {"params": embeds, "lr": EMBEDDING_LR * scale},
        {"params": [model.lm_head.weight], "lr": UNEMBEDDING_LR * scale},
        {"params": [model.resid_lambdas, model.x0_lambdas], "lr": SCALAR_LR},
    ]
    adam = torch.optim.AdamW(adam_groups, betas=ADAM_BETAS, eps=1e-10, weight_decay=0.0,
                             fused=CUDA)
    muon = Muon(matrices, lr=MATRIX_LR, momentum=0.95, weight_decay=WEIGHT_DECAY)
    opts = [adam, muon]
    for opt in opts:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return opts


def lr_multiplier(progress):
    if WARMUP_RATIO > 0 and progress < WARMUP_RATIO:
        return progress / WARMUP_RATIO
    if WARMDOWN_RATIO > 0 and progress > 1.0 - WARMDOWN_RATIO:
        left = max(0.0, 1.0 - progress) / WARMDOWN_RATIO
        return left + (1.0 - left) * FINAL_LR_FRAC
    return 1.0


def muon_momentum(step):
    return 0.85 + 0.10 * min(step / 300, 1.0)


# =============================================================================
# MFU: bf16 dense peak of common GPUs (FLOP/s); most specific name first
# =============================================================================

GPU_PEAK_FLOPS = [
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989.5e12), ("H200", 989.5e12),
    ("H800", 989.5e12), ("GH200", 989.5e12), ("B200", 2250e12), ("B100", 1750e12),
    ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12),
    ("A10G", 70e12), ("A10", 125e12), ("RTX 6000 Ada", 364e12), ("A6000", 155e12),
    ("RTX 5090", 209.5e12), ("RTX 4090", 165.2e12), ("RTX 4080", 97.5e12),
    ("RTX 3090", 71e12), ("V100", 125e12), ("T4", 65e12),
]


def peak_flops():
    if not CUDA:
        return 0.0
    name = torch.cuda.get_device_name()
    return next((f for key, f in GPU_PEAK_FLOPS if key in name), 0.0)


# =============================================================================
# Training
# =============================================================================

tokenizer = Tokenizer.from_directory()
vocab_size = tokenizer.get_vocab_size()
model = GPT(vocab_size, DEPTH, model_dim, n_head, head_dim, MAX_SEQ_LEN).to(DEVICE)
model.init_weights()
optimizers = build_optimizers(model)
num_params = sum(p.numel() for p in model.parameters())
flops_per_token = model.flops_per_token(MAX_SEQ_LEN)
PEAK = peak_flops()
step_model = torch.compile(model, dynamic=False) if USE_COMPILE else model
explode_loss = 2.0 * math.log(vocab_size)  # twice the loss of uniform guessing

print(f"track: {prepare.PROFILE.name} | device: "
      f"{torch.cuda.get_device_name() if CUDA else f'cpu x{torch.get_num_threads()}'} | "
      f"attention: {ATTENTION} | compile: {USE_COMPILE}")
print(f"model: depth {DEPTH}, width {model_dim}, {n_head} heads x {head_dim}, windows "
      f"{model.windows}, vocab {vocab_size}, {num_params / 1e6:.2f}M params")
print(f"batch: {batch_tokens} tokens/step = {grad_accum} x {device_batch} x {MAX_SEQ_LEN}; "
      f"budget {TIME_BUDGET:g}s")

print(f"startup: {time.time() - T_START:.1f}s")
train_loader = make_dataloader(tokenizer, device_batch, MAX_SEQ_LEN, "train", seed=SEED,
                               device=DEVICE)
x, y, epoch = next(train_loader)
step = 0
training_time = 0.0
while True:
    if CUDA:
        torch.cuda.synchronize()
    t0 = time.time()
    for _ in range(grad_accum):
        with AUTOCAST:
            loss = step_model(x, y)
        train_loss = loss.detach()
        (loss / grad_accum).backward()
        x, y, epoch = next(train_loader)
    if MAX_STEPS > 0:
        progress = min(step / MAX_STEPS, 1.0)
    else:
        progress = min(training_time / TIME_BUDGET, 1.0)
    lrm = lr_multiplier(progress)
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * lrm
    for group in optimizers[1].param_groups:
        group["momentum"] = muon_momentum(step)
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)
    loss_value = train_loss.item()  # also waits for the step to finish
    if not math.isfinite(loss_value) or loss_value > explode_loss:
        print(f"step {step}: loss {loss_value} is not finite or above {explode_loss:.2f}")
        print("FAIL")
        sys.exit(1)
    dt = time.time() - t0
    if step >= EXCLUDED_STEPS:
        training_time += dt
    tok_s = batch_tokens / dt
    mfu = 100 * flops_per_token * tok_s / PEAK if PEAK else 0.0
    print(f"step {step:05d} ({100 * progress:5.1f}%) | loss {loss_value:.4f} | lrm {lrm:.2f} | "
          f"dt {dt * 1000:.0f}ms | tok/s {tok_s:,.0f} | mfu {mfu:.1f}% | epoch {epoch} | "
          f"left {max(0.0, TIME_BUDGET - training_time):.1f}s", flush=True)
    step += 1
    if step == 1:  # keep the collector out of the timed loop
        gc.collect()
        gc.freeze()
        gc.disable()
    elif step % 1000 == 0:
        gc.collect()
    if MAX_STEPS > 0:
        if step >= MAX_STEPS:
            break
    elif step > EXCLUDED_STEPS and training_time >= TIME_BUDGET:
        break

# =============================================================================
# Evaluation and summary (the summary block is the interface to the supervisor)
# =============================================================================

model.eval()
# evaluation rows per forward pass (the metric does not depend on it; at least 8 on CPU)
eval_batch = max(1, min(device_batch if CUDA else max(device_batch, 8), EVAL_TOKENS // MAX_SEQ_LEN))
t_eval = time.time()
with AUTOCAST:
    val_bpb = evaluate_bpb(step_model, tokenizer, eval_batch)
print(f"eval: {EVAL_TOKENS} tokens in {time.time() - t_eval:.1f}s")
if not math.isfinite(val_bpb):
    print(f"val_bpb is {val_bpb}")
    print("FAIL")
    sys.exit(1)
peak_vram_mb = torch.cuda.max_memory_allocated() / 2**20 if CUDA else 0.0
total_tokens = step * batch_tokens
timed_steps = max(1, step - EXCLUDED_STEPS)
mfu_percent = (100 * flops_per_token * batch_tokens * timed_steps / training_time / PEAK
               if PEAK and training_time > 0 else 0.0)
print("---")
print(f"val_bpb:          {val_bpb:.6f}")
print(f"training_seconds: {training_time:.1f}")
print(f"total_seconds:    {time.time() - T_START:.1f}")
print(f"peak_vram_mb:     {peak_vram_mb:.1f}")
print(f"mfu_percent:      {mfu_percent:.2f}")
tokens_m = total_tokens / 1e6  # 3 decimals for the small token counts of the smoke track
print(f"total_tokens_M:   {tokens_m:.{1 if tokens_m >= 10 else 3}f}")
print(f"num_steps:        {step}")
print(f"num_params_M:     {num_params / 1e6:.1f}")
print(f"depth:            {DEPTH}")
