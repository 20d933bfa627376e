// The IMDB GRU sentiment model in LibTorch (spec: harness/specs.py RNN; its constants come from the spec's data).
#include "trainer.h"

namespace nn = torch::nn;

struct GRUClassifierImpl : nn::Module {
  explicit GRUClassifierImpl(const Spec& spec) {
    int64_t embed = spec.integer("embed"), hidden = spec.integer("hidden");
    embedding = register_module("embedding", nn::Embedding(spec.integer("vocab"), embed));
    // Reset gate applied after the hidden matmul (cuDNN's form), gates stacked (reset, update, new).
    gru = register_module("gru", nn::GRU(nn::GRUOptions(embed, hidden).batch_first(true)));
    fc = register_module("fc", nn::Linear(hidden, spec.integer("num_classes")));
  }

  torch::Tensor forward(torch::Tensor tokens) {  // tokens: (N, 150) int64
    auto [_, h] = gru(embedding(tokens));         // h: (1, N, 100), the last step's output
    return fc(h[0]);
  }

  nn::Embedding embedding{nullptr};
  nn::GRU gru{nullptr};
  nn::Linear fc{nullptr};
};
TORCH_MODULE(GRUClassifier);

std::shared_ptr<Trainer> build_rnn(const Spec& spec, const Options& options) {
  torch::manual_seed(options.seed);
  GRUClassifier net(spec);
  // nn::GRU names its single layer's tensors *_l0, as PyTorch does; the canonical file drops the suffix.
  std::map<std::string, std::string> rename;
  for (const char* k : {"weight_ih", "weight_hh", "bias_ih", "bias_hh"})
    rename[std::string("gru.") + k + "_l0"] = std::string("gru.") + k;
  return std::make_shared<Trainer>(net.ptr(), [net](const torch::Tensor& x) mutable { return net->forward(x); }, spec,
                                   options, rename);
}
