// The CIFAR-10 CNN in LibTorch (spec: harness/specs.py CNN; its constants come from the spec's data).
#include "trainer.h"

namespace nn = torch::nn;

struct CNNImpl : nn::Module {
  CNNImpl(const Spec& spec, bool dropout) {
    auto ch = spec.integers("channels");  // conv1..conv4 output channels: 3x3, pad 1
    auto flat = spec.integers("flat");    // (C, H, W) of the map fc1 reads
    auto rates = dropout ? spec.reals("dropout") : std::vector<double>(3, 0.0);
    auto conv = [](int64_t in, int64_t out) { return nn::Conv2d(nn::Conv2dOptions(in, out, 3).padding(1)); };
    conv1 = register_module("conv1", conv(spec.integers("input_shape")[0], ch[0]));
    conv2 = register_module("conv2", conv(ch[0], ch[1]));
    conv3 = register_module("conv3", conv(ch[1], ch[2]));
    conv4 = register_module("conv4", conv(ch[2], ch[3]));
    fc1 = register_module("fc1", nn::Linear(flat[0] * flat[1] * flat[2], spec.integer("dense")));
    fc2 = register_module("fc2", nn::Linear(spec.integer("dense"), spec.integer("num_classes")));
    drop1 = register_module("drop1", nn::Dropout(rates[0]));
    drop2 = register_module("drop2", nn::Dropout(rates[1]));
    drop3 = register_module("drop3", nn::Dropout(rates[2]));
  }

  torch::Tensor forward(torch::Tensor x) {  // x: (N, 3, 32, 32)
    x = torch::relu(conv1(x));
    x = drop1(torch::relu(torch::max_pool2d(conv2(x), 2)));  // (N, 50, 16, 16)
    x = torch::relu(conv3(x));
    x = drop2(torch::relu(torch::max_pool2d(conv4(x), 2)));  // (N, 100, 8, 8)
    x = torch::flatten(x, 1);                                 // (N, 6400) in C,H,W order
    x = drop3(torch::relu(fc1(x)));
    return fc2(x);  // logits; softmax is inside the loss
  }

  nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr}, conv4{nullptr};
  nn::Linear fc1{nullptr}, fc2{nullptr};
  nn::Dropout drop1{nullptr}, drop2{nullptr}, drop3{nullptr};
};
TORCH_MODULE(CNN);

std::shared_ptr<Trainer> build_cnn(const Spec& spec, const Options& options) {
  torch::manual_seed(options.seed);  // the initialisers and the dropout masks
  CNN net(spec, options.dropout);
  return std::make_shared<Trainer>(net.ptr(), [net](const torch::Tensor& x) mutable { return net->forward(x); }, spec,
                                   options);
}
