(function(){
  var q=document.getElementById("ff-filter"),s=document.getElementById("ff-status");
  if(!q||!s)return;
  function apply(){
    var text=q.value.toLowerCase(),status=s.value;
    var rows=document.querySelectorAll("#ff-table>tbody>tr.row,.gantt>.g-row[data-id],"+
      ".gantt>details.g-group");
    for(var i=0;i<rows.length;i++){
      var r=rows[i],id=(r.getAttribute("data-id")||"").toLowerCase();
      r.hidden=(text&&id.indexOf(text)<0)||(status&&r.getAttribute("data-status")!==status);
    }
  }
  q.addEventListener("input",apply);s.addEventListener("change",apply);
  document.documentElement.setAttribute("data-report-ready","1");
})();
(function(){
  var box=document.querySelector(".graph-box"),svg=box&&box.querySelector("svg");
  if(!svg)return;
  var w=parseFloat(svg.getAttribute("width"))||svg.getBBox().width,
      h=parseFloat(svg.getAttribute("height"))||svg.getBBox().height,scale=1;
  function zoom(k){scale=Math.max(0.05,Math.min(8,k));svg.style.width=(w*scale)+"px";
    svg.style.height=(h*scale)+"px";svg.setAttribute("data-scale",scale.toFixed(3));}
  function fit(){zoom(Math.min((box.clientWidth-12)/w,(box.clientHeight-12||w)/h,1));}
  box.addEventListener("wheel",function(e){if(!e.ctrlKey&&!e.metaKey)return;e.preventDefault();
    zoom(scale*(e.deltaY<0?1.15:1/1.15));},{passive:false});
  var drag=null;
  box.addEventListener("mousedown",function(e){drag=[e.clientX,e.clientY,box.scrollLeft,box.scrollTop];});
  window.addEventListener("mouseup",function(){drag=null;});
  box.addEventListener("mousemove",function(e){if(!drag)return;box.scrollLeft=drag[2]-(e.clientX-drag[0]);
    box.scrollTop=drag[3]-(e.clientY-drag[1]);});
  function on(id,ev,f){var el=document.getElementById(id);if(el)el.addEventListener(ev,f);}
  on("ff-zoom-in","click",function(){zoom(scale*1.25);});
  on("ff-zoom-out","click",function(){zoom(scale/1.25);});
  on("ff-fit","click",fit);
  on("ff-find","input",function(e){
    var text=e.target.value.toLowerCase(),nodes=svg.querySelectorAll("[data-subtask]"),first=null;
    for(var i=0;i<nodes.length;i++){var n=nodes[i],hit=text&&n.getAttribute("data-subtask").toLowerCase().indexOf(text)>=0;
      n.classList.toggle("found",!!hit);if(hit&&!first)first=n;}
    if(first){var r=first.getBoundingClientRect(),b=box.getBoundingClientRect();
      box.scrollLeft+=r.left-b.left-b.width/2;box.scrollTop+=r.top-b.top-b.height/2;}
  });
  if(svg.hasAttribute("data-fit"))fit();
})();
