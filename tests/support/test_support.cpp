#include "support/test_support.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "io/npy.hpp"

namespace exflow::test {

TempDir::TempDir() {
  std::string templ = (std::filesystem::temp_directory_path() / "exflow-test-XXXXXX").string();
  if (::mkdtemp(templ.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = templ;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_npy(const std::string& path, const std::vector<std::int64_t>& values,
               const std::vector<std::int64_t>& shape, const std::string& descr, bool fortran_order,
               int major_version) {
  write_bytes(path, io::encode_npy(values, shape, descr, fortran_order, major_version));
}

bool shared_data_available() {
  return std::filesystem::exists(std::string(EXFLOW_SHARED_DATA_DIR) + "/README.md");
}

std::string shared_data(const std::string& name) {
  return std::string(EXFLOW_SHARED_DATA_DIR) + "/" + name;
}

namespace {

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

}  // namespace

void expect_one_line_error(const CommandRun& r, int code, const std::string& fragment,
                           const std::string& program) {
  EXPECT_EQ(r.code, code) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_EQ(r.err.rfind(program + ": error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(fragment), std::string::npos) << r.err;
}

CommandRun run_command(const std::string& program, const std::vector<std::string>& args) {
  TempDir dir;
  std::string cmd = shell_quote(program);
  for (const auto& a : args) cmd.append(" ").append(shell_quote(a));
  cmd.append(" >").append(shell_quote(dir.file("out")));
  cmd.append(" 2>").append(shell_quote(dir.file("err"))).append(" </dev/null");
  const int status = std::system(cmd.c_str());
  CommandRun r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_bytes(dir.file("out"));
  r.err = read_bytes(dir.file("err"));
  return r;
}

}  // namespace exflow::test
