// Tally tracker, served at /js/script.js. Full-line comments and indentation
// are stripped when the binary is built; names are short because every byte
// is downloaded by every visitor of every tracked site.
// No cookies, no storage writes, no third-party requests.
//
// Names: w window, d document, l location, n navigator, s this <script>,
// S send, I why-ignored, V pageview, F flush engagement, K tick (engaged time),
// M measure scroll, E engaged ms, T visible-since, D scroll depth, U page URL,
// P last counted page, H hash mode, X exclusion patterns, G glob match.
!function(){
  var w=window,d=document,l=location,n=navigator,s=d.currentScript,
    a=function(x){return s.getAttribute("data-"+x)},
    h=function(x){return a(x)!=null},
    on=function(t,e,f){t.addEventListener(e,f,!0)},
    api=a("api")||new URL(s.src).origin+"/api/event",
    dom=a("domain")||l.hostname.replace(/^www\./,""),
    H=h("hash-mode"),
    // data-exclude="/admin/*,/preview/**": * stays within a segment, ** spans segments.
    X=(a("exclude")||"").split(","),
    E=0,T,D=0,U,P;

  // Whether path p matches pattern t. Every position of the pattern the path
  // can reach is kept at once, so the time is linear in the path; a RegExp
  // backtracks for seconds on /*a*a*a…b and a long path. A star's position
  // stays reachable over any character (but / for a single star), and leads
  // on to the position after it (after both stars of **) for free.
  function G(t,p){
    for(var v=[1],i=0,j,c,w;;v=w,i++){
      for(j=0;j<t.length;j++)v[j]&&t[j]=="*"&&(v[j+1+(t[j+1]=="*")]=1);
      if(!(c=p[i]))return v[j];
      for(w=[],j=0;j<t.length;j++)v[j]&&(t[j]=="*"?(t[j+1]=="*"||c!="/")&&(w[j]=1):t[j]==c&&(w[j+1]=1))
    }
  }

  function I(){
    if(!h("include-localhost")&&(/^(localhost|127\.|\[::1\])/.test(l.hostname)||l.protocol=="file:"))return"localhost";
    if(n.webdriver&&!h("include-automation"))return"automation";
    // The site owner's own opt-out: localStorage.tally_ignore = "true" (read, never written).
    try{if(localStorage.tally_ignore=="true")return"tally_ignore"}catch(e){}
    for(var i=0;i<X.length;i++)if(G(X[i].trim(),l.pathname))return"excluded"
  }

  function S(name,o,u){
    o=o||{};
    var c=o.callback,y=I(),p={n:name,u:u||l.href,d:dom,r:d.referrer||null,w:w.innerWidth};
    if(y)return c&&c({ignored:y});
    if(H)p.h=1;
    if(o.props)p.p=o.props;
    if(o.revenue)p.$=o.revenue;
    if(o.interactive===!1)p.i=!1;
    if(o.sd!=null)p.sd=o.sd,p.e=o.e;
    p=JSON.stringify(p);
    // sendBeacon survives leaving the page; with a callback, fetch reports when it is done.
    // A string body goes out as text/plain, which needs no CORS preflight.
    c||!n.sendBeacon||!n.sendBeacon(api,p)?fetch(api,{method:"POST",body:p,keepalive:!0}).then(function(r){c&&c({status:r.status})}):0
  }

  // Engagement: time the page was visible and focused, and how far it was scrolled.
  function K(){
    T&&(E+=Date.now()-T);
    T=!d.hidden&&d.hasFocus()&&Date.now()
  }
  function M(){
    var e=d.documentElement,t=e.scrollHeight;
    D=Math.max(D,t<=w.innerHeight?100:Math.min(100,Math.round((w.scrollY+w.innerHeight)/t*100)))
  }
  // x: the page is being left, so stop counting (pagehide can come before
  // the page turns hidden, which would otherwise report a second time).
  function F(x){
    K();
    x&&(T=0);
    U&&E&&S("engagement",{sd:D,e:E,interactive:!1},U);
    E=0
  }

  // One pageview per distinct path (and #route in hash mode).
  function V(){
    var p=l.pathname+(H?l.hash:"");
    if(p==P)return;
    F();
    P=p;U=l.href;D=0;
    M();
    S("pageview")
  }

  // Single-page apps navigate through the History API.
  ["pushState","replaceState"].forEach(function(m){
    var f=history[m];
    history[m]=function(){var r=f.apply(this,arguments);V();return r}
  });
  on(w,"popstate",V);
  H&&on(w,"hashchange",V);
  on(d,"visibilitychange",function(){d.hidden?F():K()});
  on(w,"pagehide",function(){F(1)});
  on(w,"focus",K);
  on(w,"blur",K);
  on(w,"scroll",M);

  // Outbound links and downloads go out by sendBeacon: navigation is never held back.
  function C(e){
    var t=e.target.closest&&e.target.closest("a[href]"),u;
    if(!t||e.button>1)return;
    u=new URL(t.href,l.href);
    h("file-downloads")&&/\.(pdf|docx?|xlsx?|pptx?|csv|txt|rtf|epub|zip|rar|7z|t?gz|dmg|exe|msi|pkg|deb|apk|iso|mp[34]|wav|mov|avi|mkv)$/i.test(u.pathname)?S("File Download",{props:{url:u.href}})
      :h("outbound-links")&&/^http/.test(u.protocol)&&u.host!=l.host&&S("Outbound Link: Click",{props:{url:u.href}})
  }
  on(d,"click",C);
  on(d,"auxclick",C);

  // window.tally(name, {props, revenue, interactive, callback}); calls queued before load are replayed.
  var q=w.tally&&w.tally.q||[];
  w.tally=S;
  K();
  V();
  q.forEach(function(x){S(x[0],x[1])})
}();
