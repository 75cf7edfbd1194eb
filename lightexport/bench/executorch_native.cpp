// A C interface over ExecuTorch's own runtime libraries (the wheel's lib/libexecutorch*.so), for the
// emulated arm64 worker: ExecuTorch's Python runtime links PyTorch, and no aarch64 PyTorch on the package
// registry loads beside executorch's wheel, so that worker runs programs through this library with ctypes
// (lightexport/parity/runners/executorch_native.py). Built by lightexport/bench/arm64_executorch.py with
// Debian's aarch64 cross compiler against the wheel's headers; every call catches C++ exceptions and
// reports errors as text, so a bad program is an error line, never an abort.
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

// The wheel ships libexecutorch_threadpool.so but not threadpool.h: the two members used here, as declared
// upstream (extension/threadpool/threadpool.h); a member call needs no layout, only the symbol.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t count);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace {
namespace rt = executorch::runtime;
using executorch::extension::module::Module;

struct Program {
  std::unique_ptr<Module> module;
  std::vector<rt::EValue> outputs;
};

void say(char* err, size_t cap, const std::string& text) {
  if (err != nullptr && cap > 0) {
    std::strncpy(err, text.c_str(), cap - 1);
    err[cap - 1] = 0;
  }
}

std::string status(const char* what, rt::Error error) {
  char code[16];
  std::snprintf(code, sizeof code, "0x%x", static_cast<unsigned>(error));
  return std::string(what) + " failed with ExecuTorch error " + code;
}
}  // namespace

extern "C" {
// Size the process-wide pool XNNPACK runs on (before any program loads); 0 leaves it. Returns its size.
int lx_et_threads(int wanted) {
  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (pool == nullptr) return 0;
  if (wanted > 0) pool->_unsafe_reset_threadpool(static_cast<uint32_t>(wanted));
  return static_cast<int>(pool->get_thread_count());
}

void* lx_et_open(const char* path, char* err, size_t cap) {
  try {
    auto program = std::make_unique<Program>();
    program->module = std::make_unique<Module>(std::string(path), Module::LoadMode::File);
    rt::Error error = program->module->load_method("forward");
    if (error != rt::Error::Ok) {
      say(err, cap, status("loading method forward", error));
      return nullptr;
    }
    return program.release();
  } catch (const std::exception& e) {
    say(err, cap, e.what());
    return nullptr;
  }
}

// Run forward on one float32 tensor; returns the number of outputs, or -1 (the reason in err).
int lx_et_run(void* handle, float* data, const int64_t* shape, int ndim, char* err, size_t cap) {
  try {
    auto* program = static_cast<Program*>(handle);
    std::vector<executorch::aten::SizesType> sizes(shape, shape + ndim);
    auto tensor = executorch::extension::from_blob(data, sizes, executorch::aten::ScalarType::Float);
    auto result = program->module->execute("forward", std::vector<rt::EValue>{rt::EValue(tensor)});
    if (!result.ok()) {
      say(err, cap, status("execute", result.error()));
      return -1;
    }
    program->outputs = std::move(*result);
    return static_cast<int>(program->outputs.size());
  } catch (const std::exception& e) {
    say(err, cap, e.what());
    return -1;
  }
}

// The shape of output `index` of the last run (at most 8 dimensions); its rank, or -1 (not a float32 tensor).
int lx_et_output_shape(void* handle, int index, int64_t* shape, char* err, size_t cap) {
  try {
    const auto& value = static_cast<Program*>(handle)->outputs.at(index);
    if (!value.isTensor() || value.toTensor().scalar_type() != executorch::aten::ScalarType::Float ||
        value.toTensor().dim() > 8) {
      say(err, cap, "output " + std::to_string(index) + " is not a float32 tensor of rank <= 8");
      return -1;
    }
    const auto& tensor = value.toTensor();
    for (int i = 0; i < tensor.dim(); ++i) shape[i] = tensor.size(i);
    return static_cast<int>(tensor.dim());
  } catch (const std::exception& e) {
    say(err, cap, e.what());
    return -1;
  }
}

// Copy output `index` of the last run into `out` (sized from lx_et_output_shape).
int lx_et_output_copy(void* handle, int index, float* out) {
  try {
    const auto& tensor = static_cast<Program*>(handle)->outputs.at(index).toTensor();
    std::memcpy(out, tensor.const_data_ptr<float>(), tensor.numel() * sizeof(float));
    return 0;
  } catch (const std::exception&) {
    return -1;
  }
}

void lx_et_close(void* handle) { delete static_cast<Program*>(handle); }
}
