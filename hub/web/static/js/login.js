// The login page: keep the page the user came for, and say when the token was wrong.
const params = new URLSearchParams(location.search);
const next = params.get("next");
// Only the hub's own pages: the hub checks this again, so a crafted link cannot redirect elsewhere.
document.getElementById("login-next").value = next === "/dashboard" ? "/dashboard" : "/";
document.getElementById("login-failed").hidden = params.get("failed") !== "1";
