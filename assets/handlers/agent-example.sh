#!/bin/sh
# The skeleton of a real agent handler: check out the repository with the forge token, run an
# agent command in it, and comment back on the issue or merge request.
#   [worker] command = ["sh", "assets/handlers/agent-example.sh"]
#   AGENT_COMMAND   what to run in the checkout (default: a dry run that lists the files)
# The task JSON is on stdin and in $AGENTCTL_TASK_FILE; tokens come from GITHUB_PERSONAL_ACCESS_TOKEN
# or GITLAB_PERSONAL_ACCESS_TOKEN (agentctl passes them through; webhook secrets never reach here).
set -eu
task_file=$AGENTCTL_TASK_FILE
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2]) or '')" "$task_file" "$1"; }
title=$(field title)

echo "::progress 5 checking out $AGENTCTL_REPO"
case "$AGENTCTL_SOURCE" in
  github)
    : "${GITHUB_PERSONAL_ACCESS_TOKEN:?set github.token to let the agent clone and comment}"
    api=${GITHUB_API_URL:-https://api.github.com}
    git clone --depth 1 "https://x-access-token:${GITHUB_PERSONAL_ACCESS_TOKEN}@github.com/${AGENTCTL_REPO}.git" repo
    ;;
  gitlab)
    : "${GITLAB_PERSONAL_ACCESS_TOKEN:?set gitlab.token to let the agent clone and comment}"
    api=${GITLAB_API_URL:-https://gitlab.com/api/v4}
    host=$(printf '%s' "$AGENTCTL_URL" | sed -E 's#^(https?://[^/]+)/.*#\1#')
    git clone --depth 1 "${host%%://*}://oauth2:${GITLAB_PERSONAL_ACCESS_TOKEN}@${host#*://}/${AGENTCTL_REPO}.git" repo
    ;;
esac

echo "::progress 30 running the agent on: $title"
cd repo
${AGENT_COMMAND:-ls -la}
cd ..

echo "::progress 90 commenting back"
body="agentctl ran the agent for this item (task $AGENTCTL_TASK_ID, attempt $AGENTCTL_ATTEMPT)."
json=$(python3 -c 'import json,sys; print(json.dumps({"body": sys.argv[1]}))' "$body")
case "$AGENTCTL_SOURCE" in
  github)
    curl -fsS -X POST -H "Authorization: Bearer $GITHUB_PERSONAL_ACCESS_TOKEN" -H "Accept: application/vnd.github+json" \
      "$api/repos/$AGENTCTL_REPO/issues/$AGENTCTL_NUMBER/comments" -d "$json" >/dev/null ;;
  gitlab)
    project=$(field project_id)
    what=issues; [ "$AGENTCTL_KIND" = merge_request ] && what=merge_requests
    curl -fsS -X POST -H "PRIVATE-TOKEN: $GITLAB_PERSONAL_ACCESS_TOKEN" -H "Content-Type: application/json" \
      "$api/projects/$project/$what/$AGENTCTL_NUMBER/notes" -d "$json" >/dev/null ;;
esac
echo "::progress 100 done"
