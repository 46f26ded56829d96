// hwca ledger list
#include "cli/context.h"

#include <nlohmann/json.hpp>

#include <iostream>
#include <memory>

namespace hwca::cli {

void add_ledger_commands(CLI::App& app, Context& ctx) {
  auto* ledger = app.add_subcommand("ledger", "the record of every issued certificate");
  ledger->require_subcommand(1);
  auto output = std::make_shared<std::string>("text");
  auto* list = ledger->add_subcommand("list", "one line per issued certificate");
  list->add_option("--output", *output, "text (default) or json")->check(CLI::IsMember({"text", "json"}));
  list->callback([output, &ctx] {
    ctx.action = [output, &ctx] {
      auto db = ctx.open_ledger();
      auto entries = db->list();
      if (*output == "json") {
        nlohmann::ordered_json arr = nlohmann::ordered_json::array();
        for (const auto& e : entries) {
          arr.push_back({{"serial", e.serial},
                         {"subject", e.subject},
                         {"issuer", e.issuer},
                         {"sans", e.sans},
                         {"not_before", e.not_before},
                         {"not_after", e.not_after},
                         {"profile", e.profile},
                         {"requester", e.requester},
                         {"issued_at", e.issued_at},
                         {"status", e.status},
                         {"request_id", e.request_id}});
        }
        std::cout << arr.dump(2) << std::endl;
        return;
      }
      for (const auto& e : entries)
        std::cout << e.serial << "  " << e.subject << "  " << e.not_after << "  " << e.profile << "\n";
      std::cout.flush();
    };
  });
}

}  // namespace hwca::cli
