// ResNet-50 v1.5 in LibTorch (spec: harness/specs.py RESNET50; its constants come from the spec's data).
#include "trainer.h"

namespace nn = torch::nn;

namespace {

nn::BatchNorm2d batchnorm(const Spec& spec, int64_t c) {
  return nn::BatchNorm2d(nn::BatchNorm2dOptions(c).eps(spec.real("bn_eps")).momentum(spec.real("bn_momentum")));
}

nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).bias(false));  // symmetric padding
}

}  // namespace

struct BottleneckImpl : nn::Module {
  BottleneckImpl(const Spec& spec, int64_t cin, int64_t width, int64_t stride, bool shortcut_conv) {
    int64_t cout = width * spec.integer("expansion");
    conv1 = register_module("conv1", conv(cin, width, 1));
    bn1 = register_module("bn1", batchnorm(spec, width));
    conv2 = register_module("conv2", conv(width, width, 3, stride));  // v1.5: the stride is on the 3x3
    bn2 = register_module("bn2", batchnorm(spec, width));
    conv3 = register_module("conv3", conv(width, cout, 1));
    bn3 = register_module("bn3", batchnorm(spec, cout));
    if (shortcut_conv) downsample = register_module("downsample", nn::Sequential(conv(cin, cout, 1, stride),
                                                                                 batchnorm(spec, cout)));
  }

  torch::Tensor forward(torch::Tensor x) {
    auto out = torch::relu(bn1(conv1(x)));
    out = torch::relu(bn2(conv2(out)));
    out = bn3(conv3(out));
    return torch::relu(out + (downsample ? downsample->forward(x) : x));
  }

  nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  nn::Sequential downsample{nullptr};
};
TORCH_MODULE(Bottleneck);

struct ResNet50Impl : nn::Module {
  explicit ResNet50Impl(const Spec& spec) {
    int64_t stem = spec.integer("stem");
    conv1 = register_module("conv1", conv(spec.integers("input_shape")[0], stem, 7, 2));
    bn1 = register_module("bn1", batchnorm(spec, stem));
    // The spec's 16 blocks, "layer1.0" .. "layer4.2": one Sequential per stage, its blocks named 0, 1, ...
    int64_t features = 0;  // channels out of the last block: 2048
    for (const auto& b : spec.records("blocks")) {
      auto prefix = b.text("prefix");
      auto stage = prefix.substr(0, prefix.find('.'));
      if (layers.empty() || layer_names.back() != stage) {
        layer_names.push_back(stage);
        layers.push_back(register_module(stage, nn::Sequential()));
      }
      int64_t width = b.integer("width");
      layers.back()->push_back(Bottleneck(spec, b.integer("cin"), width, b.integer("stride"), b.flag("downsample")));
      features = width * spec.integer("expansion");
    }
    fc = register_module("fc", nn::Linear(features, spec.integer("num_classes")));
  }

  torch::Tensor forward(torch::Tensor x) {  // x: (N, 3, S, S)
    x = torch::relu(bn1(conv1(x)));
    x = torch::max_pool2d(x, 3, 2, 1);
    for (auto& layer : layers) x = layer->forward(x);  // (N, 2048, S/32, S/32)
    return fc(torch::flatten(torch::adaptive_avg_pool2d(x, {1, 1}), 1));
  }

  nn::Conv2d conv1{nullptr};
  nn::BatchNorm2d bn1{nullptr};
  std::vector<nn::Sequential> layers;
  std::vector<std::string> layer_names;
  nn::Linear fc{nullptr};
};
TORCH_MODULE(ResNet50);

std::shared_ptr<Trainer> build_resnet50(const Spec& spec, const Options& options) {
  torch::manual_seed(options.seed);
  ResNet50 net(spec);
  return std::make_shared<Trainer>(net.ptr(), [net](const torch::Tensor& x) mutable { return net->forward(x); }, spec,
                                   options);
}
