// How LayerCache::download_and_cache() and friends reach the Hugging Face Hub.
#pragma once

#include <optional>
#include <string>

#include "layercache/progress.h"
#include "layercache/quantization.h"
#include "layercache/status.h"

namespace layercache {

struct DownloadOptions {
  std::string revision = "main";  // branch, tag or commit; resolved to a commit
  int connections = 8;            // parallel range requests, 1-64
  // Called as a layer's bytes arrive (about every 100 ms), unless quiet.
  // The library draws nothing; the CLI passes ProgressBarCallback().
  ProgressCallback progress;
  bool quiet = false;         // no progress reports
  std::string layer_pattern;  // e.g. "decoder.block.{i}."; "" detects it
  std::string endpoint;       // "" : $HF_ENDPOINT or https://huggingface.co
  std::string token;          // "" : $HF_TOKEN or the token file
  bool offline = false;       // serve from the cache only (also HF_HUB_OFFLINE=1)
  bool verify_tls = true;
  // PEM file of the CAs to trust (a private Hub mirror); "" : $CURL_CA_BUNDLE,
  // $REQUESTS_CA_BUNDLE or $SSL_CERT_FILE, else the system's store.
  std::string ca_bundle;
  int max_retries = 5;  // per request, with exponential backoff
  // Quantize each downloaded layer (nf4 / int8, layercache/quantization.h)
  // before it is cached: the unquantized bytes never reach a tier, and the
  // entry's key carries the mode ("nf4", "int8"). nullopt: cache as published.
  std::optional<quant::QuantConfig> quantize;
};

// The quantization_mode under which download_non_layer_tensors() and
// import_checkpoint() cache a model's embeddings, final norm and lm_head (as
// layer_index 0).
inline constexpr const char* kNonLayerQuantizationMode = "non-layer";

// Checks a Hub repo id ("org/name" or "name"): letters, digits, '-', '_',
// '.', no "..", no leading or trailing separator; kInvalidArgument saying
// which rule failed otherwise. download_and_cache and the CLI check with it.
Status CheckRepoId(const std::string& repo_id);

}  // namespace layercache
