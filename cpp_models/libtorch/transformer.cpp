// The character-level GPT in LibTorch (spec: harness/specs.py TRANSFORMER; its constants come from the
// spec's data). The modules mirror python_models/pytorch/transformer.py: attention through
// torch::scaled_dot_product_attention (the fused kernel), exact GELU, the output projection tied to
// the token embedding. Module names are the canonical weight keys (blocks.0.attn.qkv.weight, ...);
// the trainer initialises every tensor from the spec's families (normal(0,0.02), zeros, ones, and
// normal(0, 0.02/sqrt(2*layers)) for attn.proj and mlp.proj).
#include "trainer.h"

namespace nn = torch::nn;

struct CausalSelfAttentionImpl : nn::Module {
  CausalSelfAttentionImpl(const Spec& spec, double dropout) : heads(spec.integer("heads")), dropout(dropout) {
    int64_t c = spec.integer("width");
    qkv = register_module("qkv", nn::Linear(c, 3 * c));  // rows: q, k, v, each head after head
    proj = register_module("proj", nn::Linear(c, c));
    drop = register_module("drop", nn::Dropout(dropout));
  }

  torch::Tensor forward(const torch::Tensor& x) {  // x: (N, T, C)
    int64_t n = x.size(0), t = x.size(1), c = x.size(2);
    auto parts = qkv(x).split(c, /*dim=*/2);  // three (N, T, C)
    auto split_heads = [&](const torch::Tensor& p) { return p.view({n, t, heads, c / heads}).transpose(1, 2); };
    // softmax(q k^T / sqrt(C/heads) + causal mask), dropout on those probabilities while training, @ v
    auto y = torch::scaled_dot_product_attention(split_heads(parts[0]), split_heads(parts[1]), split_heads(parts[2]),
                                                 /*attn_mask=*/{}, is_training() ? dropout : 0.0, /*is_causal=*/true);
    return drop(proj(y.transpose(1, 2).reshape({n, t, c})));  // heads side by side again
  }

  int64_t heads;
  double dropout;
  nn::Linear qkv{nullptr}, proj{nullptr};
  nn::Dropout drop{nullptr};
};
TORCH_MODULE(CausalSelfAttention);

struct MLPImpl : nn::Module {
  MLPImpl(const Spec& spec, double dropout) {
    int64_t c = spec.integer("width"), hidden = spec.integer("mlp_width");
    fc = register_module("fc", nn::Linear(c, hidden));
    proj = register_module("proj", nn::Linear(hidden, c));
    drop = register_module("drop", nn::Dropout(dropout));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    return drop(proj(torch::gelu(fc(x), /*approximate=*/"none")));  // exact GELU: x * Phi(x)
  }

  nn::Linear fc{nullptr}, proj{nullptr};
  nn::Dropout drop{nullptr};
};
TORCH_MODULE(MLP);

struct BlockImpl : nn::Module {
  BlockImpl(const Spec& spec, double dropout) {
    auto norm = nn::LayerNormOptions({spec.integer("width")}).eps(spec.real("ln_eps"));
    ln1 = register_module("ln1", nn::LayerNorm(norm));
    attn = register_module("attn", CausalSelfAttention(spec, dropout));
    ln2 = register_module("ln2", nn::LayerNorm(norm));
    mlp = register_module("mlp", MLP(spec, dropout));
  }

  torch::Tensor forward(torch::Tensor x) {
    x = x + attn(ln1(x));  // pre-LayerNorm: the residual stream itself is never normalised
    return x + mlp(ln2(x));
  }

  nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  CausalSelfAttention attn{nullptr};
  MLP mlp{nullptr};
};
TORCH_MODULE(Block);

struct GPTImpl : nn::Module {
  GPTImpl(const Spec& spec, double dropout) {
    int64_t c = spec.integer("width");
    tok_emb = register_module("tok_emb", nn::Embedding(spec.integer("vocab"), c));
    pos_emb = register_module("pos_emb", nn::Embedding(spec.integer("context"), c));
    blocks = register_module("blocks", nn::ModuleList());
    for (int64_t i = 0; i < spec.integer("layers"); ++i) blocks->push_back(Block(spec, dropout));
    ln_f = register_module("ln_f", nn::LayerNorm(nn::LayerNormOptions({c}).eps(spec.real("ln_eps"))));
  }

  torch::Tensor forward(const torch::Tensor& tokens) {  // tokens: (N, T) int64 bytes
    auto positions = torch::arange(tokens.size(1), tokens.options());
    auto x = tok_emb(tokens) + pos_emb(positions);  // (N, T, C)
    for (const auto& block : *blocks) x = block->as<Block>()->forward(x);
    return torch::nn::functional::linear(ln_f(x), tok_emb->weight);  // (N, T, vocab): tied, no bias
  }

  nn::Embedding tok_emb{nullptr}, pos_emb{nullptr};
  nn::ModuleList blocks{nullptr};
  nn::LayerNorm ln_f{nullptr};
};
TORCH_MODULE(GPT);

std::shared_ptr<Trainer> build_transformer(const Spec& spec, const Options& options) {
  torch::manual_seed(options.seed);  // the initialisers and the dropout masks
  GPT net(spec, options.dropout ? spec.real("dropout") : 0.0);
  return std::make_shared<Trainer>(net.ptr(), [net](const torch::Tensor& x) mutable { return net->forward(x); }, spec,
                                   options);
}
