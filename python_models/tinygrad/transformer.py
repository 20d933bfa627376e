"""The character-level GPT in tinygrad (spec: harness.specs.TRANSFORMER), its step TinyJit-captured.

Plain classes whose attribute names are the canonical keys (a list of blocks gives
"blocks.0.attn.qkv.weight"), tinygrad's nn.Linear / nn.LayerNorm / nn.Embedding in PyTorch's
layouts, so the canonical weight mapping is the identity. Attention is
Tensor.scaled_dot_product_attention (is_causal): tinygrad writes it out as softmax(q k^T /
sqrt(head width) + causal mask) with dropout on the probabilities, @ v, and fuses it into the
captured kernels. GELU is gelu(approximate="none"), x/2 (1 + erf(x/sqrt 2)) with tinygrad's erf
(Abramowitz & Stegun 7.1.26, |error| < 1.5e-7). The output projection is the token embedding (tied).
"""
from __future__ import annotations

from tinygrad import Tensor, nn

from harness.specs import TransformerArch
from python_models.tinygrad.trainer import TinygradTrainer, start


def linear(fin: int, fout: int, std: float) -> nn.Linear:
    """nn.Linear (weight (out, in)), normal(0, std) weight and zero bias, as the spec's families say."""
    layer = nn.Linear(fin, fout)
    layer.weight, layer.bias = Tensor.normal(fout, fin, mean=0.0, std=std), Tensor.zeros(fout)
    return layer


class CausalSelfAttention:
    def __init__(self, arch: TransformerArch, dropout: float):
        self.heads, self.dropout = arch.heads, dropout
        self.qkv = linear(arch.width, 3 * arch.width, arch.init_std)  # rows q, k, v, each head after head
        self.proj = linear(arch.width, arch.width, arch.residual_std)

    def __call__(self, x: Tensor) -> Tensor:  # x: (N, T, C)
        n, t, c = x.shape
        # (N, T, 3C) -> three (N, heads, T, C/heads)
        q, k, v = (part.reshape(n, t, self.heads, c // self.heads).transpose(1, 2) for part in self.qkv(x).chunk(3, dim=2))
        # dropout on the probabilities: tinygrad's dropout acts only under TRAINING (the train step)
        y = q.scaled_dot_product_attention(k, v, dropout_p=self.dropout, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(n, t, c)).dropout(self.dropout)  # heads side by side again


class MLP:
    def __init__(self, arch: TransformerArch, dropout: float):
        self.dropout = dropout
        self.fc = linear(arch.width, arch.mlp_width, arch.init_std)
        self.proj = linear(arch.mlp_width, arch.width, arch.residual_std)

    def __call__(self, x: Tensor) -> Tensor:
        return self.proj(self.fc(x).gelu(approximate="none")).dropout(self.dropout)  # exact (erf) GELU


class Block:
    def __init__(self, arch: TransformerArch, dropout: float):
        self.ln1, self.ln2 = nn.LayerNorm(arch.width, eps=arch.ln_eps), nn.LayerNorm(arch.width, eps=arch.ln_eps)
        self.attn, self.mlp = CausalSelfAttention(arch, dropout), MLP(arch, dropout)

    def __call__(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))  # pre-LayerNorm: the residual stream itself is never normalised
        return x + self.mlp(self.ln2(x))


class GPT:
    def __init__(self, arch: TransformerArch, dropout: float):
        self.tok_emb, self.pos_emb = nn.Embedding(arch.vocab, arch.width), nn.Embedding(arch.context, arch.width)
        self.tok_emb.weight = Tensor.normal(arch.vocab, arch.width, mean=0.0, std=arch.init_std)
        self.pos_emb.weight = Tensor.normal(arch.context, arch.width, mean=0.0, std=arch.init_std)
        self.blocks = [Block(arch, dropout) for _ in range(arch.layers)]
        self.ln_f = nn.LayerNorm(arch.width, eps=arch.ln_eps)

    def __call__(self, tokens: Tensor) -> Tensor:  # tokens: (N, T) int32 bytes
        positions = Tensor.arange(tokens.shape[1])
        x = self.tok_emb(tokens) + self.pos_emb(positions)  # (N, T, C)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.tok_emb.weight.T  # (N, T, vocab): tied, no bias


def build(spec, options):
    start(options)
    return TinygradTrainer(GPT(spec.arch, spec.arch.dropout if options.dropout else 0.0), spec, options,
                           fast_path={"attention": "Tensor.scaled_dot_product_attention (explicit softmax(QK^T)V, "
                                                   "is_causal), fused into the captured step",
                                      "gelu": "gelu(approximate='none'): tinygrad's erf, A&S 7.1.26 (< 1.5e-7)"})
