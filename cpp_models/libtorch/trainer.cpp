// The shared trainer (see trainer.h) and the Python module the harness loads.
#include "trainer.h"

#include <torch/cuda.h>
#include <torch/extension.h>  // pybind11 and the tensor conversions: only this file sees Python

#include <sstream>

namespace py = pybind11;

namespace F = torch::nn::functional;

namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

std::string shape_of(const torch::Tensor& t) {
  std::ostringstream out;
  out << "(";
  for (int64_t d = 0; d < t.dim(); ++d) out << (d ? ", " : "") << t.size(d);
  out << (t.dim() == 1 ? ",)" : ")");
  return out.str();
}

// The spec names each canonical tensor's initialiser family (harness/specs.py Weight.init);
// here is what that family is in torch::nn::init.
void initialise(torch::Tensor& t, const std::string& family) {
  namespace init = torch::nn::init;
  if (starts_with(family, "glorot_uniform")) {
    init::xavier_uniform_(t);  // fans in*kh*kw and out*kh*kw, over a GRU's stacked matrix as a whole
  } else if (starts_with(family, "orthogonal")) {
    init::orthogonal_(t);
  } else if (family == "he_normal_fan_out") {
    init::kaiming_normal_(t, 0.0, torch::kFanOut, torch::kReLU);  // std = sqrt(2 / (out*kh*kw))
  } else if (family == "zeros") {
    init::zeros_(t);
  } else if (family == "ones") {
    init::ones_(t);
  } else if (starts_with(family, "uniform(")) {  // "uniform(low,high)"
    double low = 0, high = 0;
    char comma = 0;
    std::istringstream(family.substr(8)) >> low >> comma >> high;
    init::uniform_(t, low, high);
  } else if (starts_with(family, "normal(")) {  // "normal(mean,std)"
    double mean = 0, std = 0;
    char comma = 0;
    std::istringstream(family.substr(7)) >> mean >> comma >> std;
    init::normal_(t, mean, std);
  } else {
    throw std::invalid_argument("no torch::nn::init for the spec's initialiser '" + family + "'");
  }
}

// SGD in PyTorch's form (v = m*v + g; w -= lr*v), Adam, or AdamW, as the spec's optimizer says.
// AdamW gets two parameter groups, as the Python reference: the tensors the spec decays (`decayed`:
// matrices and embeddings) with its weight decay, and the rest (biases, LayerNorm) with none.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::Tensor> params,
                                                        std::vector<torch::Tensor> decayed, const Spec& opt) {
  auto name = opt.text("name");
  if (name == "adamw") {
    auto options = [&](double decay) {
      return torch::optim::AdamWOptions(opt.real("lr"))
          .betas({opt.real("beta1"), opt.real("beta2")})
          .eps(opt.real("eps"))
          .weight_decay(decay);
    };
    std::vector<torch::Tensor> rest;
    for (const auto& p : params) {
      bool decays = false;
      for (const auto& d : decayed) decays = decays || d.is_same(p);
      if (!decays) rest.push_back(p);
    }
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decayed, std::make_unique<torch::optim::AdamWOptions>(options(opt.real("weight_decay"))));
    groups.emplace_back(rest, std::make_unique<torch::optim::AdamWOptions>(options(0.0)));
    return std::make_unique<torch::optim::AdamW>(std::move(groups), options(opt.real("weight_decay")));
  }
  if (name == "sgd")
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(opt.real("lr")).momentum(opt.real("momentum")));
  if (name == "adam")
    return std::make_unique<torch::optim::Adam>(
        params, torch::optim::AdamOptions(opt.real("lr"))
                    .betas({opt.real("beta1"), opt.real("beta2")})
                    .eps(opt.real("eps")));
  throw std::invalid_argument("unknown optimizer '" + name + "' in the spec");
}

}  // namespace

Trainer::Trainer(std::shared_ptr<torch::nn::Module> net, Forward forward, const Spec& spec, const Options& options,
                 std::map<std::string, std::string> rename)
    : net_(std::move(net)),
      forward_(std::move(forward)),
      rename_(std::move(rename)),
      device_(options.device == "cuda" ? torch::kCUDA : torch::kCPU),
      eval_batch_(spec.integer("eval_batch")),
      num_classes_(spec.integer("num_classes")) {
  auto own = tensors();
  std::map<std::string, std::string> families;
  for (const auto& w : spec.records("weights")) families[w.text("key")] = w.text("init");
  std::vector<std::string> differ;
  for (const auto& [key, _] : own)
    if (!families.count(key)) differ.push_back(key);
  for (const auto& [key, _] : families)
    if (!own.count(key)) differ.push_back(key);
  if (!differ.empty())
    throw std::logic_error("the C++ model's tensors and the spec's canonical keys differ, e.g. '" + differ[0] + "'");
  torch::NoGradGuard no_grad;
  for (auto& [key, t] : own) initialise(t, families.at(key));
  net_->to(device_);
  std::vector<torch::Tensor> decayed;  // the spec's Weight.decay tensors (AdamW's first group)
  auto placed = tensors();             // after the move to the device
  for (const auto& w : spec.records("weights"))
    if (w.has("decay") && w.flag("decay")) decayed.push_back(placed.at(w.text("key")));
  auto opt = spec.part("optimizer");
  optimizer_ = make_optimizer(net_->parameters(), decayed, opt);
  // clip_grad_norm_'s factor is clip_norm / (norm + 1e-6): the spec's clip_eps, as in Python PyTorch
  if (opt.has("clip_norm")) clip_norm_ = opt.real("clip_norm");
}

std::map<std::string, torch::Tensor> Trainer::tensors() {
  std::map<std::string, torch::Tensor> out;
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    auto it = rename_.find(name);
    out[it == rename_.end() ? name : it->second] = t;
  };
  for (const auto& p : net_->named_parameters()) add(p.key(), p.value());
  for (const auto& b : net_->named_buffers())
    if (b.key().find("num_batches_tracked") == std::string::npos) add(b.key(), b.value());
  return out;
}

void Trainer::fit_data(torch::Tensor x, torch::Tensor y) {
  // On the CPU the tensors are the harness's numpy arrays themselves (torch.from_numpy): no copy.
  x_ = x.to(device_);
  y_ = y.to(device_);
}

torch::Tensor Trainer::train_epoch(const torch::Tensor& plan) {
  net_->train();
  std::vector<torch::Tensor> losses;
  losses.reserve(plan.size(0));
  for (int64_t step = 0; step < plan.size(0); ++step) {
    auto idx = plan[step].to(device_);  // (batch,) row indices of this step
    // the mean over every prediction: (N, classes) with (N,), or (N, T, vocab) with (N, T) as rows
    auto logits = forward_(x_.index_select(0, idx));
    auto loss = F::cross_entropy(logits.flatten(0, -2), y_.index_select(0, idx).flatten());
    optimizer_->zero_grad();
    loss.backward();
    if (clip_norm_ > 0) torch::nn::utils::clip_grad_norm_(net_->parameters(), clip_norm_);  // one global norm
    optimizer_->step();
    losses.push_back(loss.detach());
  }
  if (losses.empty()) return torch::empty({0});
  return torch::stack(losses).to(torch::kCPU);  // the copy to the host waits for the device
}

torch::Tensor Trainer::predict(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  net_->eval();
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < x.size(0); i += eval_batch_)
    out.push_back(forward_(x.slice(0, i, std::min(i + eval_batch_, x.size(0))).to(device_)).to(torch::kCPU));
  return out.empty() ? torch::zeros({0, num_classes_}) : torch::cat(out);
}

std::map<std::string, torch::Tensor> Trainer::get_weights() {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [key, t] : tensors()) out[key] = t.detach().to(torch::kCPU, /*non_blocking=*/false, /*copy=*/true);
  return out;
}

void Trainer::set_weights(const std::map<std::string, torch::Tensor>& weights) {
  auto own = tensors();
  for (const auto& [key, w] : weights) {
    auto it = own.find(key);
    if (it == own.end()) throw std::invalid_argument("unexpected canonical weight '" + key + "'");
    if (!w.sizes().equals(it->second.sizes()))
      throw std::invalid_argument(key + " has shape " + shape_of(w) + "; the model's is " + shape_of(it->second));
  }
  for (const auto& [key, _] : own)
    if (!weights.count(key)) throw std::invalid_argument("missing canonical weight '" + key + "'");
  torch::NoGradGuard no_grad;
  for (auto& [key, t] : own) t.copy_(weights.at(key));
}

int64_t Trainer::param_count() const {
  int64_t n = 0;
  for (const auto& p : net_->parameters())
    if (p.requires_grad()) n += p.numel();
  return n;
}

torch::Tensor Trainer::data(const std::string& name) const {
  if (name == "x") return x_;
  if (name == "y") return y_;
  throw std::invalid_argument("no training array '" + name + "'; choices: x, y");
}

void Trainer::matmul(int64_t n) {
  if (!peak_a_.defined() || peak_a_.size(0) != n) {
    auto options = torch::TensorOptions().dtype(torch::kFloat32).device(device_);
    peak_a_ = torch::randn({n, n}, options);
    peak_b_ = torch::randn({n, n}, options);
  }
  torch::mm(peak_a_, peak_b_);  // on the CPU it returns once the product is done
  if (device_.is_cuda()) torch::cuda::synchronize();
}

// --------------------------------------------------------------------------- the Python module
namespace {

// The spec's dict (ModelSpec.as_data()) as a Spec: numbers, lists of numbers, strings, tables.
// Lists of lists (ResNet's "stages") and of strings ("weight_keys") are left out: the models read
// the "blocks" and "weights" records.
Spec to_spec(const py::dict& data) {
  Spec out;
  for (const auto& [k, v] : data) {
    auto key = k.cast<std::string>();
    if (py::isinstance<py::str>(v)) {
      out.texts[key] = v.cast<std::string>();
    } else if (py::isinstance<py::bool_>(v) || py::isinstance<py::int_>(v) || py::isinstance<py::float_>(v)) {
      out.numbers[key] = {v.cast<double>()};
    } else if (py::isinstance<py::dict>(v)) {
      out.tables[key] = {to_spec(v.cast<py::dict>())};
    } else if (py::isinstance<py::list>(v)) {
      auto items = v.cast<py::list>();
      if (items.size() > 0 && py::isinstance<py::dict>(items[0])) {
        for (const auto& item : items) out.tables[key].push_back(to_spec(item.cast<py::dict>()));
      } else if (items.size() == 0 || py::isinstance<py::int_>(items[0]) || py::isinstance<py::float_>(items[0])) {
        out.numbers[key] = v.cast<std::vector<double>>();
      }
    }
  }
  return out;
}

std::shared_ptr<Trainer> build(const std::string& model, const py::dict& spec, const py::dict& options) {
  static const std::map<std::string, std::shared_ptr<Trainer> (*)(const Spec&, const Options&)> models = {
      {"cnn", build_cnn}, {"resnet50", build_resnet50}, {"rnn", build_rnn}, {"transformer", build_transformer}};
  auto it = models.find(model);
  if (it == models.end()) throw std::invalid_argument("no C++ model '" + model + "'");
  Options o;
  o.seed = options["seed"].cast<int64_t>();
  o.dropout = options["dropout"].cast<bool>();
  o.device = options["device"].cast<std::string>();
  return it->second(to_spec(spec), o);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "DL Rosetta's LibTorch models (cpp_models/libtorch) and their trainer";
  py::class_<Trainer, std::shared_ptr<Trainer>>(m, "Trainer")
      .def("fit_data", &Trainer::fit_data)
      // The loops run without the GIL: nothing in them touches Python.
      .def("train_epoch", &Trainer::train_epoch, py::call_guard<py::gil_scoped_release>())
      .def("predict", &Trainer::predict, py::call_guard<py::gil_scoped_release>())
      .def("get_weights", &Trainer::get_weights)
      .def("set_weights", &Trainer::set_weights)
      .def("param_count", &Trainer::param_count)
      .def("data", &Trainer::data)
      .def("matmul", &Trainer::matmul, py::call_guard<py::gil_scoped_release>());
  m.def("build", &build, py::arg("model"), py::arg("spec"), py::arg("options"));
}
