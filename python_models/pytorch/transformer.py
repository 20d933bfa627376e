"""The character-level GPT in PyTorch (spec: harness.specs.TRANSFORMER), the reference.

nanoGPT's Shakespeare model on a byte vocabulary: pre-LayerNorm blocks, causal self-attention
through F.scaled_dot_product_attention (the fused kernel: flash or memory-efficient attention on
a GPU, a fused C++ kernel on CPU), exact (erf) GELU, the output projection tied to the token
embedding. The module names are the canonical weight keys (tok_emb.weight, blocks.0.attn.qkv.weight, ...).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from python_models.pytorch.trainer import make_trainer


class CausalSelfAttention(nn.Module):
    def __init__(self, arch, dropout: float):
        super().__init__()
        self.heads, self.dropout = arch.heads, dropout
        self.qkv = nn.Linear(arch.width, 3 * arch.width)  # rows: q, k, v, each head after head
        self.proj = nn.Linear(arch.width, arch.width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):  # x: (N, T, C)
        n, t, c = x.shape
        # (N, T, 3C) -> three (N, heads, T, C/heads)
        q, k, v = (part.view(n, t, self.heads, c // self.heads).transpose(1, 2) for part in self.qkv(x).split(c, dim=2))
        # softmax(q k^T / sqrt(C/heads) + causal mask), dropout on those probabilities while training, @ v
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).reshape(n, t, c)  # heads side by side again
        return self.drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, arch, dropout: float):
        super().__init__()
        self.fc = nn.Linear(arch.width, arch.mlp_width)
        self.proj = nn.Linear(arch.mlp_width, arch.width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x), approximate="none")))  # exact GELU: x * Phi(x)


class Block(nn.Module):
    def __init__(self, arch, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(arch.width, eps=arch.ln_eps)
        self.attn = CausalSelfAttention(arch, dropout)
        self.ln2 = nn.LayerNorm(arch.width, eps=arch.ln_eps)
        self.mlp = MLP(arch, dropout)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))  # pre-LayerNorm: the residual stream itself is never normalised
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, arch, dropout: float):
        super().__init__()
        self.tok_emb = nn.Embedding(arch.vocab, arch.width)
        self.pos_emb = nn.Embedding(arch.context, arch.width)
        self.blocks = nn.ModuleList(Block(arch, dropout) for _ in range(arch.layers))
        self.ln_f = nn.LayerNorm(arch.width, eps=arch.ln_eps)
        for name, p in self.named_parameters():  # LayerNorm weights keep their 1
            if name.endswith(("attn.proj.weight", "mlp.proj.weight")):  # they write into the residual stream
                nn.init.normal_(p, 0.0, arch.residual_std)
            elif p.dim() == 2:  # every other Linear weight and both embeddings
                nn.init.normal_(p, 0.0, arch.init_std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, tokens):  # tokens: (N, T) int64 bytes
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tok_emb(tokens) + self.pos_emb(positions)  # (N, T, C)
        for block in self.blocks:
            x = block(x)
        return F.linear(self.ln_f(x), self.tok_emb.weight)  # (N, T, vocab): tied, no bias


def build(spec, options):
    torch.manual_seed(options.seed)
    model = GPT(spec.arch, spec.arch.dropout if options.dropout else 0.0)
    return make_trainer(model, spec, options)
