#!/bin/sh
# Demo traffic for the docker-compose stack: creates two teams with budgets and a key for
# each, then sends a chat completion through the proxy every couple of seconds.
set -u
BASE=http://litellm:4000
AUTH="Authorization: Bearer ${LITELLM_MASTER_KEY}"
JSON="Content-Type: application/json"

post() {
    curl -sS -X POST "$BASE$1" -H "$AUTH" -H "$JSON" -d "$2"
}

new_key() {
    post /key/generate "$1" | sed -n 's/.*"key": *"\([^"]*\)".*/\1/p'
}

post /team/new '{"team_id": "team-search", "team_alias": "Search", "max_budget": 0.05, "budget_duration": "1d"}' >/dev/null
post /team/new '{"team_id": "team-ads", "team_alias": "Ads", "max_budget": 1, "budget_duration": "30d"}' >/dev/null
search=$(new_key '{"team_id": "team-search", "key_alias": "search-prod", "max_budget": 0.02}')
ads=$(new_key '{"team_id": "team-ads", "key_alias": "ads-batch", "duration": "5d"}')
echo "traffic: keys created, sending requests"

while true; do
    for pair in "$search:gpt-4o" "$ads:gpt-4o-mini" "$ads:claude-sonnet"; do
        key=${pair%%:*}
        model=${pair#*:}
        curl -sS -o /dev/null "$BASE/chat/completions" -H "Authorization: Bearer $key" -H "$JSON" \
            -d "{\"model\": \"$model\", \"user\": \"customer-$(( $(date +%s) % 3 ))\", \"messages\": [{\"role\": \"user\", \"content\": \"hello\"}], \"metadata\": {\"tags\": [\"demo\"]}}"
    done
    sleep 2
done
