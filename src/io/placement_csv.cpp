// The original ExFlow placement CSV: header `Expert,Node`, rows `layer*E + e,gpu`.
#include <charconv>
#include <fstream>
#include <sstream>
#include <string>

#include "core/quoted.hpp"
#include "exflow/error.hpp"
#include "exflow/placement.hpp"
#include "io/atomic_file.hpp"

namespace exflow {
namespace {

std::string trim(const std::string& s) {
  std::size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  std::size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

bool parse_int(const std::string& text, long long& out) {
  std::string t = trim(text);
  if (t.empty()) return false;
  auto res = std::from_chars(t.data(), t.data() + t.size(), out);
  return res.ec == std::errc() && res.ptr == t.data() + t.size();
}

}  // namespace

Placement read_placement_csv(const std::string& path, int layers, int experts, int gpus) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(path + ": cannot open placement CSV");
  const long long total = static_cast<long long>(layers) * experts;
  std::vector<int> gpu_of(static_cast<std::size_t>(total), -1);
  struct ExtraRow {
    long long expert, gpu;
  };
  std::vector<ExtraRow> extra;  // rows after an expert's first: further copies
  std::string line;
  long long line_no = 0;
  long long rows = 0;
  bool header_seen = false;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF line end
    if (line_no == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);
    if (std::size_t cr = line.find('\r'); cr != std::string::npos) {
      throw InputError(path + ":" + std::to_string(line_no) + ": a carriage return at column " +
                       std::to_string(cr + 1) + " that does not end the line, in " +
                       exflow::quoted(line));
    }
    std::string t = trim(line);
    if (t.empty()) continue;
    if (!header_seen) {
      std::string h;
      for (char c : t) {
        if (c != ' ' && c != '\t') h += c;
      }
      if (h != "Expert,Node") {
        throw InputError(path + ":" + std::to_string(line_no) + ": expected the header " +
                         "'Expert,Node', found " + exflow::quoted(t));
      }
      header_seen = true;
      continue;
    }
    std::size_t comma = t.find(',');
    long long expert = 0, gpu = 0;
    if (comma == std::string::npos || t.find(',', comma + 1) != std::string::npos ||
        !parse_int(t.substr(0, comma), expert) || !parse_int(t.substr(comma + 1), gpu)) {
      throw InputError(path + ":" + std::to_string(line_no) +
                       ": expected two integers 'Expert,Node', found " + exflow::quoted(t));
    }
    if (expert < 0 || expert >= total) {
      throw InputError(path + ":" + std::to_string(line_no) + ": expert " + std::to_string(expert) +
                       " is out of range for " + std::to_string(layers) + " layers x " +
                       std::to_string(experts) + " experts (0.." + std::to_string(total - 1) + ")");
    }
    if (gpu < 0 || gpu >= gpus) {
      throw InputError(path + ":" + std::to_string(line_no) + ": GPU " + std::to_string(gpu) +
                       " of expert " + std::to_string(expert) + " is out of range 0.." +
                       std::to_string(gpus - 1));
    }
    int& slot = gpu_of[static_cast<std::size_t>(expert)];
    if (slot >= 0) {
      extra.push_back({expert, gpu});
    } else {
      slot = static_cast<int>(gpu);
      ++rows;
    }
  }
  if (!header_seen) throw InputError(path + ": empty placement CSV (no 'Expert,Node' header)");
  if (rows != total) {
    for (long long i = 0; i < total; ++i) {
      if (gpu_of[static_cast<std::size_t>(i)] < 0) {
        throw InputError(path + ": " + std::to_string(rows) + " rows for " +
                         std::to_string(layers) + " layers x " + std::to_string(experts) +
                         " experts; expert " + std::to_string(i) + " (layer " +
                         std::to_string(i / experts) + ", expert " + std::to_string(i % experts) +
                         ") is missing");
      }
    }
  }
  Placement placement(layers, experts, gpus, std::move(gpu_of));
  for (const ExtraRow& r : extra) {
    const int layer = static_cast<int>(r.expert / experts);
    const int e = static_cast<int>(r.expert % experts);
    placement.add_copy(layer, e, static_cast<int>(r.gpu));
  }
  return placement;
}

void write_placement_csv(const std::string& path, const Placement& placement) {
  std::string out = "Expert,Node\n";
  out.reserve(out.size() + placement.gpu_of().size() * 10);
  for (std::size_t i = 0; i < placement.gpu_of().size(); ++i) {
    out += std::to_string(i);
    out += ',';
    out += std::to_string(placement.gpu_of()[i]);
    out += '\n';
  }
  for (const Replica& r : placement.replicas()) {
    out += std::to_string(static_cast<long long>(r.layer) * placement.experts() + r.expert);
    out += ',';
    out += std::to_string(r.gpu);
    out += '\n';
  }
  io::write_file_atomically(path, out);
}

}  // namespace exflow
