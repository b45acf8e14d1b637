// exflow: expert placement for Mixture-of-Experts inference from inter-layer expert affinity.
//
// The CLI edge: every library error becomes one line on stderr and an exit status
// (0 success, 1 bad input, 2 bad usage).
#include <CLI/CLI.hpp>
#include <iostream>
#include <new>

#include "commands.hpp"
#include "exflow/error.hpp"
#include "exflow/outputs.hpp"
#include "options.hpp"

int main(int argc, char** argv) {
  exflow::install_temporary_cleanup();
  CLI::App app{"exflow: place Mixture-of-Experts experts on GPUs from inter-layer expert affinity"};
  app.require_subcommand(1);
  auto subcommands = exflow::cli::add_subcommands(app);
  CLI::App* markdown = app.add_subcommand("help-markdown", "print docs/cli.md");
  markdown->group("");

  try {
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      if (e.get_exit_code() == 0) return app.exit(e);  // --help
      std::cerr << "exflow: error: " << e.what() << " (see --help)\n";
      return 2;
    }
    if (markdown->parsed()) {
      std::cout << exflow::cli::cli_markdown();
      return 0;
    }
    for (auto& sub : subcommands) {
      if (sub.app->parsed()) return sub.run();
    }
  } catch (const exflow::UsageError& e) {
    std::cerr << "exflow: error: " << exflow::cli::message_with_flags(e) << "\n";
    return 2;
  } catch (const exflow::Error& e) {
    std::cerr << "exflow: error: " << exflow::cli::message_with_flags(e) << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "exflow: error: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "exflow: error: " << e.what() << "\n";
    return 1;
  }
  return 2;
}
