// The LibTorch training loop shared by the three C++ models: the harness protocol in C++.
//
// The harness (harness/runtimes/cpp.py) compiles this folder into one Python extension with
// torch.utils.cpp_extension, against the installed torch wheel's own headers and libraries, and
// calls build(model, spec, options). The spec arrives as data (harness/specs.py
// ModelSpec.as_data()): every constant a model needs is read from it by name, none is restated.
#pragma once

#include <torch/nn.h>  // not <torch/torch.h>: the model files compile in about half the time
#include <torch/optim.h>
#include <torch/utils.h>

#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

// A model's spec as plain data, read by name: numbers and lists of numbers ("num_classes",
// "channels"), strings, and records (a list of tables, e.g. "weights", "blocks"; a table, e.g.
// "optimizer", is a one-record list). trainer.cpp fills it from the Python dict.
class Spec {
 public:
  int64_t integer(const std::string& key) const { return static_cast<int64_t>(one(key)); }
  double real(const std::string& key) const { return one(key); }
  bool flag(const std::string& key) const { return one(key) != 0; }
  std::vector<int64_t> integers(const std::string& key) const {
    auto v = find(numbers, key);
    return std::vector<int64_t>(v.begin(), v.end());
  }
  std::vector<double> reals(const std::string& key) const { return find(numbers, key); }
  std::string text(const std::string& key) const { return find(texts, key); }
  std::vector<Spec> records(const std::string& key) const { return find(tables, key); }
  // Whether the spec has the field at all (a None, e.g. an optimizer without clip_norm, is left out).
  bool has(const std::string& key) const { return numbers.count(key) || texts.count(key) || tables.count(key); }
  Spec part(const std::string& key) const { return records(key).at(0); }

  std::map<std::string, std::vector<double>> numbers;
  std::map<std::string, std::string> texts;
  std::map<std::string, std::vector<Spec>> tables;

 private:
  template <typename T>
  static const T& find(const std::map<std::string, T>& in, const std::string& key) {
    auto it = in.find(key);
    if (it == in.end()) throw std::out_of_range("the spec has no field '" + key + "' of that kind");
    return it->second;
  }
  double one(const std::string& key) const {
    const auto& v = find(numbers, key);
    if (v.size() != 1) throw std::out_of_range("the spec's '" + key + "' is not one number");
    return v[0];
  }
};

// What the C++ side reads of harness.protocol.RunOptions.
struct Options {
  int64_t seed = 0;
  bool dropout = true;  // false: dropout rates 0 (the equivalence checks' training steps)
  std::string device = "cpu";
};

class Trainer {
 public:
  using Forward = std::function<torch::Tensor(const torch::Tensor&)>;

  // `rename` maps LibTorch's parameter names to canonical keys where they differ (the GRU's _l0).
  Trainer(std::shared_ptr<torch::nn::Module> net, Forward forward, const Spec& spec, const Options& options,
          std::map<std::string, std::string> rename = {});

  void fit_data(torch::Tensor x, torch::Tensor y);
  torch::Tensor train_epoch(const torch::Tensor& plan);  // (steps, batch) int64 -> (steps,) float32 losses
  torch::Tensor predict(const torch::Tensor& x);         // eval-mode logits (N, classes), float32, CPU
  std::map<std::string, torch::Tensor> get_weights();    // canonical keys, PyTorch layouts, CPU copies
  void set_weights(const std::map<std::string, torch::Tensor>& weights);
  int64_t param_count() const;
  torch::Tensor data(const std::string& name) const;  // what fit_data holds: "x" or "y"
  void matmul(int64_t n);  // one n x n float32 product on the device, waited for (the matmul peak)

 private:
  std::map<std::string, torch::Tensor> tensors();  // canonical key -> parameter or buffer

  std::shared_ptr<torch::nn::Module> net_;
  Forward forward_;
  std::map<std::string, std::string> rename_;
  torch::Device device_;
  int64_t eval_batch_;
  int64_t num_classes_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  double clip_norm_ = 0;  // global gradient-norm clipping threshold; 0: none
  torch::Tensor x_, y_;
  torch::Tensor peak_a_, peak_b_;
};

// One per model file; each seeds torch::manual_seed(options.seed) before building its module.
std::shared_ptr<Trainer> build_cnn(const Spec& spec, const Options& options);
std::shared_ptr<Trainer> build_resnet50(const Spec& spec, const Options& options);
std::shared_ptr<Trainer> build_rnn(const Spec& spec, const Options& options);
std::shared_ptr<Trainer> build_transformer(const Spec& spec, const Options& options);
